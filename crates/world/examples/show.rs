//! Prints a world's sizes and a sample of everything in it:
//! `cargo run -p world --example show -- [smoke|default|large] [seed]`.

use world::{DocKind, Family, World, WorldSize};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size = args.get(1).and_then(|s| WorldSize::from_name(s)).unwrap_or(WorldSize::Smoke);
    let seed = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(0);
    let t = std::time::Instant::now();
    let w = World::generate(seed, size);
    let elapsed = t.elapsed();
    println!("{} world, seed {seed}, generated in {elapsed:.2?}", size.name());
    println!("{}", serde_json::to_string_pretty(&w.stats()).expect("stats serialise"));
    for kind in DocKind::ALL {
        if let Some(d) = w.pretrain_docs().iter().find(|d| d.kind == kind) {
            println!("\n--- {} ({}) ---\n{}", d.kind.name(), d.id, d.text);
        }
    }
    for f in Family::ALL {
        for p in w.prompts_of(f).take(2) {
            let j = world::judge(&p.meta, &p.meta.reference, true);
            println!(
                "\n[{} / {} / {} / {}] {}\n  -> {}\n  score {:.3}",
                f.name(),
                p.meta.subtype,
                p.purpose.name(),
                p.user_id,
                p.text,
                p.meta.reference,
                j.score
            );
        }
    }
    for b in w.benchmarks().iter().step_by(w.config.n_benchmark_items.max(1)) {
        println!("\n[bench {}] {} | {:?} gold {}", b.task, b.context, b.choices, b.gold);
    }
}
