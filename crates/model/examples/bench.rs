//! Prints the model benchmarks: `cargo run --release -p model --example bench [-- config.json]`.
//! The optional argument is a JSON `model::bench::BenchConfig` (missing fields take defaults).

fn main() -> anyhow::Result<()> {
    let cfg: model::bench::BenchConfig = match std::env::args().nth(1) {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(&path)?)?,
        None => model::bench::BenchConfig::default(),
    };
    let report = model::bench::run(&cfg)?;
    print!("{report}");
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}
