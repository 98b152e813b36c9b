//! Command-line flags and their validation.
//!
//! `Args` is what argh parses; `Config` is the checked form the daemon runs on. Every check
//! names the flag and the value it rejected, so an operator can fix the DaemonSet from the log
//! line alone.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use argh::FromArgs;

use crate::resource::{ResourceName, ResourceNameError};

/// Resource name advertised when no `--resource-name` is given; pod specs written for the
/// original Go tun-manager request it.
pub const DEFAULT_RESOURCE_NAME: &str = "devices.anza-labs.dev/tun";
/// Default number of tun slots per resource name.
pub const DEFAULT_DEVICES: u32 = 1000;
/// Upper bound for `--devices`. 100 000 slots keep one ListAndWatch message near 2.3 MB, below
/// gRPC's default 4 MiB message limit that the kubelet's client applies.
pub const MAX_DEVICES: u32 = 100_000;
/// Default kubelet device-plugin directory.
pub const DEFAULT_PLUGIN_DIR: &str = "/var/lib/kubelet/device-plugins";
/// File name of the kubelet's Registration socket inside the plugin directory.
pub const KUBELET_SOCKET_NAME: &str = "kubelet.sock";
/// Default path of the tun device node on the host.
pub const DEFAULT_DEVICE_PATH: &str = "/dev/net/tun";
/// Default sysfs mount point.
pub const DEFAULT_SYSFS_ROOT: &str = "/sys";
/// Default supervisor poll interval in milliseconds.
///
/// 250 ms keeps idle CPU under 0.1 % of a core and re-registers within one interval after a
/// kubelet restart; BENCHMARKS.md has the figures for 25, 100 and 250 ms.
pub const DEFAULT_POLL_INTERVAL_MS: u64 = 250;
/// Accepted range for `--poll-interval-ms` and the probe's `--timeout-ms`.
pub const POLL_INTERVAL_RANGE_MS: std::ops::RangeInclusive<u64> = 10..=60_000;
/// Maximum unix socket path length the kernel accepts: `sun_path` is 108 bytes including the NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;

/// Kubernetes device plugin that grants /dev/net/tun to the containers that request it.
#[derive(FromArgs, Debug)]
pub struct Args {
    /// extended resource name to advertise; repeat the flag to advertise the same device under
    /// several names, each with its own socket and slot pool (default:
    /// devices.anza-labs.dev/tun)
    #[argh(option)]
    pub resource_name: Vec<String>,

    /// number of tun slots advertised per resource name, from 1 to 100000 (default: 1000)
    #[argh(option, default = "DEFAULT_DEVICES")]
    pub devices: u32,

    /// absolute path of the kubelet device-plugin directory where the plugin sockets are served
    /// (default: /var/lib/kubelet/device-plugins)
    #[argh(option, default = "PathBuf::from(DEFAULT_PLUGIN_DIR)")]
    pub plugin_dir: PathBuf,

    /// absolute path of the kubelet Registration socket (default: <plugin-dir>/kubelet.sock)
    #[argh(option)]
    pub kubelet_socket: Option<PathBuf>,

    /// absolute path of the tun device node on the host, handed to containers as
    /// /dev/net/tun (default: /dev/net/tun)
    #[argh(option, default = "PathBuf::from(DEFAULT_DEVICE_PATH)")]
    pub device_path: PathBuf,

    /// absolute path where sysfs is mounted, read for the tun driver's class/misc/tun/dev
    /// (default: /sys)
    #[argh(option, default = "PathBuf::from(DEFAULT_SYSFS_ROOT)")]
    pub sysfs_root: PathBuf,

    /// milliseconds between checks of the kubelet socket, the plugin sockets and the device
    /// node, from 10 to 60000 (default: 250)
    #[argh(option, default = "DEFAULT_POLL_INTERVAL_MS")]
    pub poll_interval_ms: u64,

    /// log level: error, warn, info, debug or trace; RUST_LOG overrides it (default: info)
    #[argh(option, default = "String::from(\"info\")")]
    pub log_level: String,

    #[argh(subcommand)]
    /// a subcommand instead of the daemon
    pub command: Option<Command>,
}

/// Subcommands of the binary.
#[derive(FromArgs, Debug)]
#[argh(subcommand)]
pub enum Command {
    /// Liveness check of a running daemon.
    Probe(crate::probe::ProbeArgs),
}

/// Validated daemon configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Resource names to advertise, without duplicates, in flag order.
    pub resources: Vec<ResourceName>,
    /// Slots advertised per resource name.
    pub devices: u32,
    /// Kubelet device-plugin directory.
    pub plugin_dir: PathBuf,
    /// Kubelet Registration socket.
    pub kubelet_socket: PathBuf,
    /// Host path of the tun device node.
    pub device_path: PathBuf,
    /// Mount point of sysfs.
    pub sysfs_root: PathBuf,
    /// Supervisor poll interval.
    pub poll_interval: Duration,
    /// Log filter for env_logger when `RUST_LOG` is unset.
    pub log_level: log::LevelFilter,
}

/// A flag value that the daemon cannot run with.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag, with its leading dashes.
    pub flag: &'static str,
    /// The rejected value as given.
    pub value: String,
    /// Reason for the rejection, with the value to pass instead.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} for {}: {}",
            self.value, self.flag, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every flag and builds the configuration, or returns the first invalid flag.
    pub fn from_args(args: Args) -> Result<Config, ConfigError> {
        let resources = parse_resource_names(&args.resource_name)?;
        let devices = check_devices(args.devices)?;
        let plugin_dir = check_absolute("--plugin-dir", args.plugin_dir)?;
        let kubelet_socket = match args.kubelet_socket {
            Some(path) => {
                let path = check_absolute("--kubelet-socket", path)?;
                check_socket_length("--kubelet-socket", &path, &path)?;
                path
            }
            None => {
                let path = plugin_dir.join(KUBELET_SOCKET_NAME);
                check_socket_length("--plugin-dir", &plugin_dir, &path)?;
                path
            }
        };
        for resource in &resources {
            let socket = plugin_dir.join(resource.socket_name());
            check_socket_length("--plugin-dir", &plugin_dir, &socket)?;
        }
        let device_path = check_absolute("--device-path", args.device_path)?;
        let sysfs_root = check_absolute("--sysfs-root", args.sysfs_root)?;
        let poll_interval = check_milliseconds("--poll-interval-ms", args.poll_interval_ms)?;
        let log_level = parse_log_level(&args.log_level)?;
        Ok(Config {
            resources,
            devices,
            plugin_dir,
            kubelet_socket,
            device_path,
            sysfs_root,
            poll_interval,
            log_level,
        })
    }

    /// Returns the socket path served for `resource`.
    pub fn socket_path(&self, resource: &ResourceName) -> PathBuf {
        self.plugin_dir.join(resource.socket_name())
    }
}

/// Parses repeated `--resource-name` values, falling back to the default resource.
pub(crate) fn parse_resource_names(values: &[String]) -> Result<Vec<ResourceName>, ConfigError> {
    if values.is_empty() {
        let default = ResourceName::parse(DEFAULT_RESOURCE_NAME)
            .map_err(|error| resource_error(DEFAULT_RESOURCE_NAME, error))?;
        return Ok(vec![default]);
    }
    let mut names: Vec<ResourceName> = Vec::with_capacity(values.len());
    for value in values {
        let name = ResourceName::parse(value).map_err(|error| resource_error(value, error))?;
        if names.contains(&name) {
            return Err(ConfigError {
                flag: "--resource-name",
                value: value.clone(),
                reason: "given more than once; pass each resource name once".into(),
            });
        }
        names.push(name);
    }
    Ok(names)
}

fn resource_error(value: &str, error: ResourceNameError) -> ConfigError {
    ConfigError {
        flag: "--resource-name",
        value: value.to_owned(),
        reason: format!(
            "{error}; the kubelet accepts only extended resource names such as {DEFAULT_RESOURCE_NAME}"
        ),
    }
}

fn check_devices(devices: u32) -> Result<u32, ConfigError> {
    if devices == 0 || devices > MAX_DEVICES {
        return Err(ConfigError {
            flag: "--devices",
            value: devices.to_string(),
            reason: format!("must be between 1 and {MAX_DEVICES} slots"),
        });
    }
    Ok(devices)
}

pub(crate) fn check_absolute(flag: &'static str, path: PathBuf) -> Result<PathBuf, ConfigError> {
    if !path.is_absolute() {
        return Err(ConfigError {
            flag,
            value: path.display().to_string(),
            reason: "must be an absolute path".into(),
        });
    }
    Ok(path)
}

/// Rejects `value` of `flag` when the socket path it leads to is too long for a unix socket.
fn check_socket_length(flag: &'static str, value: &Path, socket: &Path) -> Result<(), ConfigError> {
    let length = socket.as_os_str().len();
    if length > MAX_SOCKET_PATH_BYTES {
        return Err(ConfigError {
            flag,
            value: value.display().to_string(),
            reason: format!(
                "socket path {} is {length} bytes, over the {MAX_SOCKET_PATH_BYTES}-byte unix \
                 socket limit; choose a shorter path",
                socket.display()
            ),
        });
    }
    Ok(())
}

/// Checks a duration flag in milliseconds against `POLL_INTERVAL_RANGE_MS`.
pub(crate) fn check_milliseconds(
    flag: &'static str,
    milliseconds: u64,
) -> Result<Duration, ConfigError> {
    if !POLL_INTERVAL_RANGE_MS.contains(&milliseconds) {
        return Err(ConfigError {
            flag,
            value: milliseconds.to_string(),
            reason: format!(
                "must be between {} and {} milliseconds",
                POLL_INTERVAL_RANGE_MS.start(),
                POLL_INTERVAL_RANGE_MS.end()
            ),
        });
    }
    Ok(Duration::from_millis(milliseconds))
}

fn parse_log_level(value: &str) -> Result<log::LevelFilter, ConfigError> {
    value.parse().map_err(|_| ConfigError {
        flag: "--log-level",
        value: value.to_owned(),
        reason: "must be one of off, error, warn, info, debug, trace".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Result<Config, ConfigError> {
        let parsed = Args::from_args(&["tun-manager"], extra).expect("flags parse");
        Config::from_args(parsed)
    }

    #[test]
    fn defaults_are_valid() {
        let config = args(&[]).expect("defaults are valid");
        assert_eq!(config.resources.len(), 1);
        assert_eq!(config.resources[0].as_str(), DEFAULT_RESOURCE_NAME);
        assert_eq!(config.devices, 1000);
        assert_eq!(
            config.kubelet_socket,
            PathBuf::from("/var/lib/kubelet/device-plugins/kubelet.sock")
        );
        assert_eq!(
            config.socket_path(&config.resources[0]),
            PathBuf::from("/var/lib/kubelet/device-plugins/tun.sock")
        );
        assert_eq!(config.poll_interval, Duration::from_millis(250));
        assert_eq!(config.log_level, log::LevelFilter::Info);
    }

    #[test]
    fn kubelet_socket_follows_plugin_dir() {
        let config = args(&["--plugin-dir", "/var/lib/k0s/kubelet/device-plugins"]).expect("ok");
        assert_eq!(
            config.kubelet_socket,
            PathBuf::from("/var/lib/k0s/kubelet/device-plugins/kubelet.sock")
        );
    }

    #[test]
    fn invalid_values_name_their_flag() {
        let cases: &[(&[&str], &str)] = &[
            (&["--devices", "0"], "--devices"),
            (&["--devices", "100001"], "--devices"),
            (&["--plugin-dir", "relative/dir"], "--plugin-dir"),
            (&["--kubelet-socket", "kubelet.sock"], "--kubelet-socket"),
            (&["--device-path", "dev/net/tun"], "--device-path"),
            (&["--sysfs-root", "sys"], "--sysfs-root"),
            (&["--poll-interval-ms", "5"], "--poll-interval-ms"),
            (&["--poll-interval-ms", "600000"], "--poll-interval-ms"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--resource-name", "tun"], "--resource-name"),
            (&["--resource-name", "kubernetes.io/tun"], "--resource-name"),
        ];
        for (flags, flag) in cases {
            let error = args(flags).expect_err("invalid flag value is rejected");
            assert_eq!(error.flag, *flag, "flags {flags:?}");
            assert!(error.to_string().contains(flags[1]), "{error}");
        }
    }

    #[test]
    fn duplicate_resource_name_rejected() {
        let error = args(&[
            "--resource-name",
            "squat.ai/tun",
            "--resource-name",
            "squat.ai/tun",
        ])
        .expect_err("duplicate is rejected");
        assert_eq!(error.flag, "--resource-name");
    }

    #[test]
    fn long_socket_path_rejected() {
        let long_dir = format!("/{}", "d".repeat(100));
        let error = args(&["--plugin-dir", &long_dir]).expect_err("path too long");
        assert_eq!(error.flag, "--plugin-dir");
        let long_socket = format!("{long_dir}/kubelet.sock");
        let error = args(&["--kubelet-socket", &long_socket]).expect_err("path too long");
        assert_eq!(error.flag, "--kubelet-socket");
        let error = args(&[
            "--plugin-dir",
            &long_dir,
            "--kubelet-socket",
            "/run/kubelet.sock",
        ])
        .expect_err("plugin socket too long");
        assert_eq!(error.flag, "--plugin-dir");
    }
}
