//! Shared helpers for the integration tests: a per-test sandbox directory, a stand-in kubelet,
//! the daemon process and fake device nodes.
//!
//! Each test binary uses a different subset of these helpers, so unused ones are allowed.
#![allow(dead_code)]

pub mod daemon;
pub mod devnode;
mod dial_back;
pub mod kubelet;
pub mod procfs;
#[allow(unsafe_code)]
pub mod tun;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use grpcio::{CallOption, RpcStatus};
use tempfile::TempDir;
use tun_manager::api::api::{AllocateRequest, ContainerAllocateRequest};

/// How long any single wait lasts before the test fails. Generous, because the suite runs
/// many daemons at once on a small machine.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// Interval between checks of a polled condition such as a file appearing or a process exiting.
const POLL: Duration = Duration::from_millis(10);

/// Resource name the daemon advertises when no `--resource-name` is given.
pub const DEFAULT_RESOURCE: &str = "devices.anza-labs.dev/tun";
/// Socket file name of the default resource.
pub const DEFAULT_SOCKET: &str = "tun.sock";

/// A temporary directory laid out like a node: `plugins/` for the sockets, `dev/tun` for the
/// device node and `sys/` for sysfs. It is removed on drop.
pub struct Sandbox {
    temp: TempDir,
    /// The kubelet device-plugin directory.
    pub plugin_dir: PathBuf,
    /// Path of the fake tun device node.
    pub device_path: PathBuf,
    /// Root of the fake sysfs tree.
    pub sysfs_root: PathBuf,
}

impl Sandbox {
    /// Creates a sandbox with a healthy fake tun device: a character device 10:200 and a sysfs
    /// tree whose `class/misc/tun/dev` reads `10:200`. Needs root for `mknod`.
    pub fn new() -> Sandbox {
        let sandbox = Sandbox::empty();
        devnode::make_tun_node(&sandbox.device_path);
        devnode::write_tun_sysfs(&sandbox.sysfs_root, "10:200");
        sandbox
    }

    /// Creates a sandbox with the directories only: no device node and no sysfs entries.
    pub fn empty() -> Sandbox {
        let temp = tempfile::Builder::new()
            .prefix("tun-manager-")
            .tempdir()
            .expect("create a temporary directory for the test");
        let root = temp.path();
        let plugin_dir = root.join("plugins");
        let sysfs_root = root.join("sys");
        std::fs::create_dir(&plugin_dir).expect("create the plugin directory");
        std::fs::create_dir(root.join("dev")).expect("create the dev directory");
        std::fs::create_dir(&sysfs_root).expect("create the sysfs directory");
        Sandbox {
            plugin_dir,
            device_path: root.join("dev/tun"),
            sysfs_root,
            temp,
        }
    }

    /// Returns the root of the temporary directory.
    pub fn root(&self) -> &Path {
        self.temp.path()
    }

    /// Returns the path of `name` inside the plugin directory.
    pub fn socket(&self, name: &str) -> PathBuf {
        self.plugin_dir.join(name)
    }

    /// Returns the flags that point the daemon at this sandbox's plugin directory, device node
    /// and sysfs tree.
    pub fn daemon_flags(&self) -> Vec<String> {
        [
            ("--plugin-dir", &self.plugin_dir),
            ("--device-path", &self.device_path),
            ("--sysfs-root", &self.sysfs_root),
        ]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
        .collect()
    }
}

/// Polls `condition` until it is true, failing the test with `description` after `TIMEOUT`.
pub fn wait_until(description: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + TIMEOUT;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {TIMEOUT:?} waiting for {description}"
        );
        std::thread::sleep(POLL);
    }
}

/// Fails the test unless it runs as root, which `mknod`, network namespaces and the real tun
/// device need.
pub fn require_root(reason: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test must run as root because it {reason}. Run the suite as root, as CI does."
    );
}

/// Returns call options for one RPC to the plugin: wait for the socket to accept, and give up
/// after `TIMEOUT`.
pub fn call_options() -> CallOption {
    CallOption::default().wait_for_ready(true).timeout(TIMEOUT)
}

/// Builds an Allocate request with one container request per entry of `containers`.
pub fn allocate_request(containers: &[&[&str]]) -> AllocateRequest {
    let mut request = AllocateRequest::new();
    for ids in containers {
        let mut container = ContainerAllocateRequest::new();
        container.devices_ids = ids.iter().map(|id| id.to_string()).collect();
        request.container_requests.push(container);
    }
    request
}

/// Returns the slot IDs `tun0` to `tun{count-1}`.
pub fn slot_ids(count: u32) -> Vec<String> {
    (0..count).map(|index| format!("tun{index}")).collect()
}

/// Returns the status of a failed RPC, failing the test with `call` if the call succeeded or
/// failed without a status from the server.
pub fn rpc_status<T: std::fmt::Debug>(result: grpcio::Result<T>, call: &str) -> RpcStatus {
    match result {
        Err(grpcio::Error::RpcFailure(status)) => status,
        Err(error) => panic!("expected {call} to fail with a status, got {error}"),
        Ok(response) => panic!("expected {call} to fail, got {response:?}"),
    }
}
