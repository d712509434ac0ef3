//! `cargo xtask` as a binary of this crate, so tests can run it as a process.

fn main() {
    if let Err(e) = xtask::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
