//! Logger setup: env_logger with a timestamp, the level and the thread name on every line.

use std::io::Write;

use env_logger::{Builder, Env};

/// Installs the global logger at `level`, where a set `RUST_LOG` overrides it, and sends gRPC
/// core's own messages through it, so they carry the same format and obey the same level.
pub fn init(level: log::LevelFilter) {
    Builder::new()
        .filter_level(level)
        // gRPC core reports routine events such as "grpc epoll fd" at info; RUST_LOG can
        // still raise it.
        .filter_module("grpcio", level.min(log::LevelFilter::Warn))
        .parse_env(Env::new().filter("RUST_LOG"))
        .format(|buf, record| {
            let thread = std::thread::current();
            writeln!(
                buf,
                "{} {:<5} [{}] {}",
                buf.timestamp_millis(),
                record.level(),
                thread.name().unwrap_or("unnamed"),
                record.args()
            )
        })
        .init();
    // grpcio turns gRPC core's logging back to its own stderr format when the level is off,
    // so leave it alone then.
    if level != log::LevelFilter::Off {
        grpcio::redirect_log();
    }
}
