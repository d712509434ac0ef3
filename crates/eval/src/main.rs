//! Run a eval stage by hand on explicit artifact directories (see `lineage::cli`).

fn main() -> anyhow::Result<()> {
    lineage::cli::main(eval::stages())
}
