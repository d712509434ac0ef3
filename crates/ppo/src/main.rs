//! Run a ppo stage by hand on explicit artifact directories (see `lineage::cli`).

fn main() -> anyhow::Result<()> {
    lineage::cli::main(ppo::stages())
}
