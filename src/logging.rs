//! Logger setup: env_logger with a timestamp, the level and the thread name on every line.

use std::io::Write;

use env_logger::{Builder, Env};

/// Installs the global logger at `level`; a set `RUST_LOG` overrides it.
pub fn init(level: log::LevelFilter) {
    Builder::new()
        .filter_level(level)
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
}
