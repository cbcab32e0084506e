//! The thin binary: parse the command line, start tracing, hand over to the library.

use clap::{Parser, Subcommand};
#[cfg(feature = "simulator")]
use lastpass_connector::simulator;
use lastpass_connector::{CancellationToken, cancel_on_signal, cli, config};
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
    /// Check the configuration, the broker and one LastPass call, as `run` does at start.
    Check(config::RunArgs),
    /// Publish a command to the connector (and with --wait, print its result).
    Publish(cli::PublishArgs),
    /// Follow the connector's result events live.
    Events(cli::EventsArgs),
    /// List, show, re-drive or purge parked commands.
    DeadLetter(cli::DeadLetterArgs),
    /// Exit 0 when a running connector's /healthz (or --ready: /readyz) answers 200.
    Healthcheck(cli::HealthcheckArgs),
    /// The whole connector in one command: simulator, consumer and a few commands (needs only
    /// RabbitMQ).
    #[cfg(feature = "simulator")]
    Demo(cli::DemoArgs),
    /// Measure the connector against the simulator and the bare AMQP floor (BENCHMARKS.md).
    #[cfg(feature = "simulator")]
    Bench(cli::BenchArgs),
    /// Run the LastPass Enterprise API simulator (for tests and demos).
    #[cfg(feature = "simulator")]
    Simulator(simulator::SimulatorArgs),
}

/// Logs go to stderr: `info` for `run` and the simulator, `warn` for the tools, whose output
/// is on stdout (`RUST_LOG` overrides both).
fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text")) {
        // Text lines escape control characters, so a newline inside a rejected email cannot
        // start a forged log line (JSON lines are escaped by JSON itself).
        builder
            .with_ansi(false)
            .with_writer(|| EscapingWriter(std::io::stderr()))
            .init();
    } else {
        builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init();
    }
}

/// Writes one formatted log line with every control character but its final newline escaped.
struct EscapingWriter<W: std::io::Write>(W);

impl<W: std::io::Write> std::io::Write for EscapingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(&escape_controls(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

fn escape_controls(buf: &[u8]) -> Vec<u8> {
    let (body, end) = match buf.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (buf, &b""[..]),
    };
    let mut out = Vec::with_capacity(buf.len());
    for &b in body {
        match b {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            b if b < 0x20 || b == 0x7f => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
            b => out.push(b),
        }
    }
    out.extend_from_slice(end);
    out
}

// mimalloc instead of glibc's malloc: 15 % less of the connector's CPU per command at 0 ms
// (BENCHMARKS.md, section 1, ninth series). The library does not choose an allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let quiet = !matches!(cli.command, Cmd::Run(_)) && !is_simulator(&cli.command);
    init_tracing(if quiet { "warn,lapin=off" } else { "info" });
    match cli.command {
        Cmd::Run(args) => {
            let config = match config::Config::from_args(args) {
                Ok(c) => c,
                Err(e) => {
                    report(&e.to_string());
                    return ExitCode::from(2);
                }
            };
            let stop = stop_on_signal();
            match lastpass_connector::run(config, stop).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    report(&chain(&e));
                    match e {
                        lastpass_connector::RunError::Startup(_) => ExitCode::from(2),
                        _ => ExitCode::FAILURE,
                    }
                }
            }
        }
        Cmd::Check(args) => {
            let config = match config::Config::from_args(args) {
                Ok(c) => c,
                Err(e) => {
                    println!("FAIL  configuration: {e}");
                    return ExitCode::from(2);
                }
            };
            let items = lastpass_connector::check(&config).await;
            for i in &items {
                let mark = match i.state {
                    lastpass_connector::CheckState::Ok => "ok  ",
                    _ => "FAIL",
                };
                println!("{mark}  {}: {}", i.what, i.detail);
            }
            if items
                .iter()
                .all(|i| i.state == lastpass_connector::CheckState::Ok)
            {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Cmd::Publish(args) => tool(cli::publish(args).await),
        Cmd::Events(args) => {
            let stop = stop_on_signal();
            tool(cli::events(args, stop).await)
        }
        Cmd::DeadLetter(args) => tool(cli::dead_letter(args).await),
        Cmd::Healthcheck(args) => tool(cli::healthcheck(args).await),
        #[cfg(feature = "simulator")]
        Cmd::Demo(args) => {
            let stop = stop_on_signal();
            tool(cli::demo(args, stop).await)
        }
        #[cfg(feature = "simulator")]
        Cmd::Bench(args) => {
            let stop = stop_on_signal();
            tool(cli::bench(args, stop).await)
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

#[cfg(feature = "simulator")]
fn is_simulator(c: &Cmd) -> bool {
    matches!(c, Cmd::Simulator(_))
}

#[cfg(not(feature = "simulator"))]
fn is_simulator(_: &Cmd) -> bool {
    false
}

/// A token cancelled by SIGINT or SIGTERM.
fn stop_on_signal() -> CancellationToken {
    let stop = CancellationToken::new();
    cancel_on_signal(stop.clone());
    stop
}

/// The last word before a non-zero exit: one JSON line like every other log line, unless
/// `LOG_FORMAT=text`.
fn report(message: &str) {
    if std::env::var("LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("text")) {
        eprintln!("lastpass-connector: {message}");
    } else {
        eprintln!(
            "{}",
            serde_json::json!({
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "level": "ERROR",
                "message": message,
                "target": "lastpass_connector",
            })
        );
    }
}

/// A tool's exit: 0, or its failure on stderr and 1 (2 for a usage error).
fn tool(result: Result<(), cli::ToolFailure>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lastpass-connector: {}", chain(&e));
            match e {
                cli::ToolFailure::Usage(_) => ExitCode::from(2),
                // 128 + SIGINT, as a shell reports a command stopped by Ctrl-C.
                cli::ToolFailure::Interrupted => ExitCode::from(130),
                _ => ExitCode::FAILURE,
            }
        }
    }
}

/// An error with its sources, for the one line printed before exiting.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn a_newline_inside_a_field_cannot_forge_a_line() {
        let line = b"WARN rejected email=\"a\nINFO forged\" done\n";
        let out = super::escape_controls(line);
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        assert!(out.ends_with(b"\n"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "WARN rejected email=\"a\\nINFO forged\" done\n"
        );
    }
}
