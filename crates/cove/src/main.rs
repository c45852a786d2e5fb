//! `cove`: the Cove binary. `cove serve` runs the AWS-compatible endpoint
//! (EC2 VPC API, STS; more services plug into the same dispatcher).

mod config;
mod server;

use clap::{Parser, Subcommand};

// The control plane allocates many small, short-lived values per request
// (decoded inputs, rendered documents); glibc's allocator spent ~40% of CPU on
// them under 64 concurrent connections, mimalloc a fraction of that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "cove",
    version,
    about = "A self-hosted, AWS-compatible cloud for ML jobs in enforced private networks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the AWS-compatible API server.
    Serve(config::ServeArgs),
}

fn init_logging(format: &str) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging(&args.log_format);
            let settings = config::Settings::resolve(&args)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            runtime.block_on(server::serve(settings))
        }
    }
}
