//! The tun-manager binary: parses flags, sets up logging, runs the daemon or the probe, and
//! maps the outcome to an exit code. The code is 0 after SIGTERM or SIGINT or a passing probe,
//! 1 when the daemon cannot start or the probe fails, and 2 for invalid flags.

use std::process::ExitCode;

use argh::FromArgs;
use tun_manager::config::{Args, Command, Config};
use tun_manager::probe::Probe;
use tun_manager::{logging, supervisor};

/// Exit code for flags that cannot be parsed or are invalid.
const EXIT_USAGE: u8 = 2;
/// Exit code when the daemon cannot start or the probe fails.
const EXIT_FAILURE: u8 = 1;

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(code) => return code,
    };
    match args.command {
        Some(Command::Probe(probe_args)) => match Probe::from_args(probe_args) {
            Ok(probe) => run_probe(&probe),
            Err(error) => usage_error(&error),
        },
        None => match Config::from_args(args) {
            Ok(config) => run_daemon(config),
            Err(error) => usage_error(&error),
        },
    }
}

fn run_daemon(config: Config) -> ExitCode {
    logging::init(config.log_level);
    log::info!(
        "tun-manager {} starting: resources {}, plugin directory {}",
        env!("CARGO_PKG_VERSION"),
        config
            .resources
            .iter()
            .map(|resource| resource.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        config.plugin_dir.display()
    );
    match supervisor::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            log::error!("{error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn run_probe(probe: &Probe) -> ExitCode {
    match probe.run() {
        Ok(()) => {
            let sockets: Vec<String> = probe
                .sockets()
                .iter()
                .map(|socket| socket.display().to_string())
                .collect();
            println!("ok: {} answered", sockets.join(", "));
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("probe failed: {error}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn usage_error(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("tun-manager: {error}");
    ExitCode::from(EXIT_USAGE)
}

/// Parses the command line, printing help or the parse error itself.
fn parse_args() -> Result<Args, ExitCode> {
    let arguments: Vec<String> = std::env::args().collect();
    let command = arguments
        .first()
        .map(String::as_str)
        .unwrap_or("tun-manager");
    let flags: Vec<&str> = arguments.iter().skip(1).map(String::as_str).collect();
    Args::from_args(&[command], &flags).map_err(|early_exit| match early_exit.status {
        Ok(()) => {
            println!("{}", early_exit.output);
            ExitCode::SUCCESS
        }
        Err(()) => {
            eprintln!("{}", early_exit.output);
            eprintln!("Run {command} --help for the list of flags.");
            ExitCode::from(EXIT_USAGE)
        }
    })
}
