fn main() {
    if let Err(e) = xtask::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
