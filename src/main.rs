//! The thin binary: parse the command line, start tracing, hand over to the library.

use clap::{Parser, Subcommand};
#[cfg(feature = "simulator")]
use lastpass_connector::simulator;
use lastpass_connector::{config, service};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "lastpass-connector", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Consume commands from RabbitMQ and apply them to LastPass.
    Run(config::RunArgs),
    /// Run the LastPass Enterprise API simulator (for tests and demos).
    #[cfg(feature = "simulator")]
    Simulator(simulator::SimulatorArgs),
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text")) {
        builder.init();
    } else {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    match cli.command {
        Cmd::Run(args) => {
            let config = match config::Config::from_args(args) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("lastpass-connector: {e}");
                    return ExitCode::from(2);
                }
            };
            match service::run(config, service::termination()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lastpass-connector: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "simulator")]
        Cmd::Simulator(args) => match simulator::run_cli(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lastpass-connector simulator: {e}");
                ExitCode::FAILURE
            }
        },
    }
}
