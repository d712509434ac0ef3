//! Run a rm stage by hand on explicit artifact directories (see `lineage::cli`).

fn main() -> anyhow::Result<()> {
    lineage::cli::main(rm::stages())
}
