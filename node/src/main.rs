//! The `ballast` command line. Thin: parse arguments, set up logging, call the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "ballast",
    version,
    about = "A clustered, highly available TCP load balancer for long-lived connections"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node from a config file. SIGUSR2: live upgrade to the binary installed at
    /// this path; SIGTERM: graceful stop.
    Run {
        #[arg(long, short)]
        config: PathBuf,
        /// Keep this file naming the serving process (for service managers other than
        /// systemd: after a live upgrade another process serves).
        #[arg(long)]
        pid_file: Option<PathBuf>,
    },
    /// Validate a config file and exit (non-zero when invalid).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run a demo cluster: 2 lb nodes + a witness and three demo backends on loopback
    /// (VRRP over UDP, no VIP), or with --netns (root) in network namespaces with a VIP.
    Demo(ballast_node::demo::DemoArgs),
    /// The demo's self-check: clients with one socket per port must each stay on one server.
    DemoCheck(ballast_node::demo::CheckArgs),
    /// Run one demo echo backend (greets with its name, echoes bytes), for labs.
    DemoBackend(ballast_node::demo::BackendArgs),
    /// Query and change a running cluster through a node's REST API.
    Ctl(ballast_node::ctl::CtlArgs),
}

/// `RUST_LOG` wins over `default_filter`.
fn init_logging(format: LogFormat, default_filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl(args) => ballast_node::ctl::run(args),
        Command::Check { config } => match ballast_node::config::load(&config) {
            Ok(config) => {
                println!("{config}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config, pid_file } => {
            let config = match ballast_node::config::load(&config) {
                Ok(config) => config,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(cli.log_format, "info");
            report(runtime().and_then(|rt| {
                rt.block_on(ballast_node::run::run(
                    config,
                    pid_file,
                    ballast_node::run::shutdown_signal(),
                ))
            }))
        }
        Command::DemoBackend(args) => {
            init_logging(cli.log_format, "warn");
            report(runtime().and_then(|rt| rt.block_on(ballast_node::demo::run_backend(args))))
        }
        Command::DemoCheck(args) => {
            init_logging(cli.log_format, "warn");
            report(runtime().and_then(|rt| rt.block_on(ballast_node::demo::run_check(args))))
        }
        Command::Demo(args) => {
            // The demo talks to a person on stdout. Its three nodes start one after the
            // other in one process, so their start-up warnings (peers not up yet) and
            // per-connection logs would drown that; RUST_LOG=info shows everything.
            init_logging(cli.log_format, "error,openraft=off");
            report(runtime().and_then(|rt| rt.block_on(ballast_node::demo::run(args))))
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
