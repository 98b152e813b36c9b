//! The tun-manager binary: parses flags, sets up logging, runs the daemon, maps the outcome to
//! an exit code (0 after SIGTERM or SIGINT, 1 when it cannot start, 2 for invalid flags).

use std::process::ExitCode;

use argh::FromArgs;
use tun_manager::config::{Args, Config};
use tun_manager::{logging, supervisor};

/// Exit code for flags that cannot be parsed or are invalid.
const EXIT_USAGE: u8 = 2;
/// Exit code when the daemon cannot start.
const EXIT_START_FAILED: u8 = 1;

fn main() -> ExitCode {
    let config = match parse_flags() {
        Ok(config) => config,
        Err(code) => return code,
    };
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
            ExitCode::from(EXIT_START_FAILED)
        }
    }
}

/// Parses and validates the command line, printing help or the error itself.
fn parse_flags() -> Result<Config, ExitCode> {
    let arguments: Vec<String> = std::env::args().collect();
    let command = arguments
        .first()
        .map(String::as_str)
        .unwrap_or("tun-manager");
    let flags: Vec<&str> = arguments.iter().skip(1).map(String::as_str).collect();
    let args =
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
        })?;
    Config::from_args(args).map_err(|error| {
        eprintln!("tun-manager: {error}");
        ExitCode::from(EXIT_USAGE)
    })
}
