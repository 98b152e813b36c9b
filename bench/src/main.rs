//! Load generator behind `scripts/bench`: runs a device plugin binary against the stand-in
//! kubelet from `tests/support` in a temporary directory, and prints one table of registration
//! and health latencies, Allocate latency and throughput, and resource use.
//!
//! The plugin is any command line plus the flag that sets its socket directory, so the same
//! figures can be taken of another device plugin on the same machine.

#[path = "../../tests/support/mod.rs"]
mod support;

mod lifecycle;
mod load;
mod plugin;
mod report;
mod run;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use argh::FromArgs;
use nix::unistd::{sysconf, SysconfVar};

use plugin::Plugin;
use report::Machine;
use run::{Settings, FULL, QUICK};

/// Measure a Kubernetes device plugin against a stand-in kubelet in a temporary directory:
/// registration and health latency, Allocate latency and throughput, memory, threads, file
/// descriptors and idle CPU. Needs root to make device nodes.
#[derive(FromArgs)]
struct Flags {
    /// run a few rounds of each measurement and 2 s of idle, to check that the harness works
    #[argh(switch)]
    quick: bool,
    /// the plugin's command line, split on whitespace, to which the flags below are appended
    #[argh(option)]
    plugin_cmd: String,
    /// flag that sets the directory of the plugin socket and kubelet.sock (default --plugin-dir)
    #[argh(option, default = "String::from(\"--plugin-dir\")")]
    plugin_dir_flag: String,
    /// flag that sets the device node the plugin checks, or "" to skip the health measurement
    /// (default --device-path)
    #[argh(option, default = "String::from(\"--device-path\")")]
    device_path_flag: String,
    /// flag that sets where sysfs is mounted, or "" for none (default --sysfs-root)
    #[argh(option, default = "String::from(\"--sysfs-root\")")]
    sysfs_root_flag: String,
    /// flag that sets the poll interval in milliseconds, or "" to measure at the plugin's own
    /// interval only (default --poll-interval-ms)
    #[argh(option, default = "String::from(\"--poll-interval-ms\")")]
    poll_flag: String,
    /// the plugin's default poll interval in milliseconds, used for every measurement but the
    /// re-registration at other intervals (default: tun-manager's default, 250)
    #[argh(option, default = "tun_manager::config::DEFAULT_POLL_INTERVAL_MS")]
    default_poll_ms: u64,
    /// another poll interval in milliseconds to measure re-registration at, repeated for more
    /// (default 25 and 100)
    #[argh(option)]
    poll_ms: Vec<u64>,
    /// resource name the plugin registers (default devices.anza-labs.dev/tun)
    #[argh(option, default = "String::from(\"devices.anza-labs.dev/tun\")")]
    resource: String,
    /// socket file name the plugin registers (default tun.sock)
    #[argh(option, default = "String::from(\"tun.sock\")")]
    socket: String,
    /// commit of this repository, printed in the report (default unknown)
    #[argh(option, default = "String::from(\"unknown\")")]
    commit: String,
    /// file to write the report into, between its markers (default: print the report only)
    #[argh(option)]
    output: Option<PathBuf>,
    /// number of Allocate calls in the memory run (default 100000, or 2000 with --quick)
    #[argh(option)]
    memory_calls: Option<usize>,
}

/// Poll intervals to measure re-registration at besides the default, when none are given.
const OTHER_POLL_MS: [u64; 2] = [25, 100];

fn main() -> ExitCode {
    let flags: Flags = argh::from_env();
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench: run as root, because the harness makes device nodes with mknod");
        return ExitCode::from(2);
    }
    let Some(plugin) = plugin_from_flags(&flags) else {
        eprintln!("bench: --plugin-cmd is empty. Pass the plugin's command line, for example --plugin-cmd \"/usr/bin/plugin --flag\"");
        return ExitCode::from(2);
    };
    let settings = settings_from_flags(&flags, &plugin);
    let mut rounds = if flags.quick { QUICK } else { FULL };
    if let Some(calls) = flags.memory_calls {
        rounds.memory_calls = calls;
    }
    let rows = run::measure(&plugin, &settings, &rounds);

    let poll = settings
        .default_poll_ms
        .map_or("the plugin's own".into(), |ms| format!("{ms} ms"));
    let section = report::section(
        &format!(
            "Measured with `scripts/bench{}` on {}, repository at commit {}.",
            if flags.quick { " --quick" } else { "" },
            Machine::read().describe(),
            flags.commit
        ),
        &format!(
            "Plugin: `{}`, poll interval {poll} unless a row names another.",
            plugin.describe()
        ),
        &rows,
    );
    println!("{section}");
    if let Some(output) = &flags.output {
        if let Err(error) = report::write_section(output, &section) {
            eprintln!("bench: failed to write {}: {error}", output.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", output.display());
    }
    ExitCode::SUCCESS
}

fn plugin_from_flags(flags: &Flags) -> Option<Plugin> {
    let mut words = flags.plugin_cmd.split_whitespace().map(str::to_owned);
    let program = words.next()?;
    let optional = |flag: &str| (!flag.is_empty()).then(|| flag.to_owned());
    Some(Plugin {
        program,
        args: words.collect(),
        plugin_dir_flag: flags.plugin_dir_flag.clone(),
        device_path_flag: optional(&flags.device_path_flag),
        sysfs_root_flag: optional(&flags.sysfs_root_flag),
        poll_flag: optional(&flags.poll_flag),
        resource: flags.resource.clone(),
        socket: flags.socket.clone(),
    })
}

fn settings_from_flags(flags: &Flags, plugin: &Plugin) -> Settings {
    let default_poll_ms = plugin.poll_flag.as_ref().map(|_| flags.default_poll_ms);
    let restart_poll_ms = match default_poll_ms {
        None => vec![None],
        Some(default) => {
            let mut intervals = if flags.poll_ms.is_empty() {
                OTHER_POLL_MS.to_vec()
            } else {
                flags.poll_ms.clone()
            };
            intervals.push(default);
            intervals.sort_unstable();
            intervals.dedup();
            intervals.into_iter().map(Some).collect()
        }
    };
    Settings {
        default_poll_ms,
        default_interval: Duration::from_millis(flags.default_poll_ms),
        restart_poll_ms,
        ticks_per_second: clock_ticks_per_second(),
    }
}

fn clock_ticks_per_second() -> u64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks.unsigned_abs(),
        other => panic!("failed to read the clock tick rate (CLK_TCK): {other:?}"),
    }
}
