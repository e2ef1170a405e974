use layerseg_torch::Runtime;

/// No options.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    println!("{}", Runtime::detect());
    Ok(())
}
