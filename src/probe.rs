//! The `probe` subcommand: a liveness check that needs no extra binary in the image.
//!
//! It calls GetDevicePluginOptions on every plugin socket the daemon serves and reports the
//! first one that does not respond within the deadline.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use grpcio::{CallOption, ChannelBuilder, EnvBuilder, Environment};

use crate::api::api::Empty;
use crate::api::api_grpc::DevicePluginClient;
use crate::config::{ConfigError, DEFAULT_PLUGIN_DIR};
use crate::resource::ResourceName;

/// Default probe deadline in milliseconds.
pub const DEFAULT_TIMEOUT_MS: u64 = 1000;

/// Check that the daemon responds on its plugin sockets. Exits 0 when every socket returns
/// GetDevicePluginOptions in time, or 1 with a one-line reason.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "probe")]
pub struct ProbeArgs {
    /// resource name whose socket to check, as given to the daemon; repeat for each (default:
    /// devices.anza-labs.dev/tun)
    #[argh(option)]
    pub resource_name: Vec<String>,

    /// absolute path of the kubelet device-plugin directory the daemon serves in (default:
    /// /var/lib/kubelet/device-plugins)
    #[argh(option, default = "PathBuf::from(DEFAULT_PLUGIN_DIR)")]
    pub plugin_dir: PathBuf,

    /// milliseconds to wait for each response, from 10 to 60000 (default: 1000)
    #[argh(option, default = "DEFAULT_TIMEOUT_MS")]
    pub timeout_ms: u64,
}

/// Validated probe settings.
#[derive(Debug)]
pub struct Probe {
    sockets: Vec<PathBuf>,
    timeout: Duration,
}

/// Failure of the probe on one socket.
#[derive(Debug)]
pub struct ProbeError {
    socket: PathBuf,
    reason: String,
}

impl fmt::Display for ProbeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "plugin socket {} did not answer GetDevicePluginOptions: {}",
            self.socket.display(),
            self.reason
        )
    }
}

impl std::error::Error for ProbeError {}

impl Probe {
    /// Checks the probe flags with the same rules as the daemon's.
    pub fn from_args(args: ProbeArgs) -> Result<Probe, ConfigError> {
        let resources = crate::config::parse_resource_names(&args.resource_name)?;
        let plugin_dir = crate::config::check_absolute("--plugin-dir", args.plugin_dir)?;
        let timeout = crate::config::check_milliseconds("--timeout-ms", args.timeout_ms)?;
        let sockets = resources
            .iter()
            .map(|resource: &ResourceName| plugin_dir.join(resource.socket_name()))
            .collect();
        Ok(Probe { sockets, timeout })
    }

    /// Calls GetDevicePluginOptions on every socket; returns the first failure.
    pub fn run(&self) -> Result<(), ProbeError> {
        let env = Arc::new(EnvBuilder::new().cq_count(1).name_prefix("probe").build());
        for socket in &self.sockets {
            check_socket(&env, socket, self.timeout)?;
        }
        Ok(())
    }

    /// Returns the sockets the probe checks.
    pub fn sockets(&self) -> &[PathBuf] {
        &self.sockets
    }
}

fn check_socket(
    env: &Arc<Environment>,
    socket: &Path,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let failure = |reason: String| ProbeError {
        socket: socket.to_owned(),
        reason,
    };
    if !socket.exists() {
        return Err(failure("the socket file does not exist".into()));
    }
    let channel = ChannelBuilder::new(Arc::clone(env))
        .use_local_subchannel_pool(true)
        .connect(&format!("unix:{}", socket.display()));
    let client = DevicePluginClient::new(channel);
    client
        .get_device_plugin_options_opt(&Empty::new(), CallOption::default().timeout(timeout))
        .map(drop)
        .map_err(|error| failure(format!("{error} (deadline {timeout:?})")))
}
