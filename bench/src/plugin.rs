//! The device plugin under test: how to start it in a sandbox, and one running instance
//! registered with the stand-in kubelet.

use std::process::Command;
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::support::daemon::Daemon;
use crate::support::kubelet::{Kubelet, Registered};
use crate::support::Sandbox;
use tun_manager::api::api::ListAndWatchResponse;

/// Command line of the plugin and the flags that point it at a sandbox.
pub struct Plugin {
    /// The program to run.
    pub program: String,
    /// Arguments that come before the sandbox flags.
    pub args: Vec<String>,
    /// Flag that sets the directory of the plugin's socket and kubelet.sock.
    pub plugin_dir_flag: String,
    /// Flag that sets the device node the plugin checks, if it has one.
    pub device_path_flag: Option<String>,
    /// Flag that sets where sysfs is mounted, if the plugin reads it.
    pub sysfs_root_flag: Option<String>,
    /// Flag that sets the poll interval in milliseconds, if the plugin has one.
    pub poll_flag: Option<String>,
    /// Resource name the plugin registers.
    pub resource: String,
    /// Socket file name the plugin registers as its endpoint.
    pub socket: String,
}

impl Plugin {
    /// Returns true when the harness can make the plugin's device node go away, which the
    /// health measurement needs.
    pub fn has_device_flag(&self) -> bool {
        self.device_path_flag.is_some()
    }

    /// Returns the command line as `spawn` builds it, with placeholders for the sandbox's
    /// paths and the poll interval.
    pub fn describe(&self) -> String {
        let mut words = vec![self.program.clone()];
        words.extend(self.args.iter().cloned());
        words.extend([self.plugin_dir_flag.clone(), "<dir>/plugins".into()]);
        let optional = [
            (&self.device_path_flag, "<dir>/dev/tun"),
            (&self.sysfs_root_flag, "<dir>/sys"),
            (&self.poll_flag, "<ms>"),
        ];
        for (flag, value) in optional {
            if let Some(flag) = flag {
                words.extend([flag.clone(), value.into()]);
            }
        }
        words.join(" ")
    }

    /// Spawns the plugin on `sandbox`, with `poll_ms` when the plugin has a poll flag and
    /// `poll_ms` is set. RUST_LOG is removed so that the plugin logs at its own default level.
    pub fn spawn(&self, sandbox: &Sandbox, poll_ms: Option<u64>) -> Daemon {
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .arg(&self.plugin_dir_flag)
            .arg(&sandbox.plugin_dir)
            .env_remove("RUST_LOG");
        if let Some(flag) = &self.device_path_flag {
            command.arg(flag).arg(&sandbox.device_path);
        }
        if let Some(flag) = &self.sysfs_root_flag {
            command.arg(flag).arg(&sandbox.sysfs_root);
        }
        if let (Some(flag), Some(poll_ms)) = (&self.poll_flag, poll_ms) {
            command.arg(flag).arg(poll_ms.to_string());
        }
        Daemon::spawn(sandbox, command)
    }
}

/// A sandbox with the stand-in kubelet and one running plugin that has registered and sent
/// its first device list.
pub struct Session<'a> {
    /// The plugin's description.
    pub plugin: &'a Plugin,
    /// The kubelet, also the plugin's client.
    pub kubelet: Kubelet,
    /// The plugin process.
    pub daemon: Daemon,
    /// The plugin's first device list.
    pub first_list: ListAndWatchResponse,
    // Dropped last, after the daemon and the kubelet that use its directory.
    pub sandbox: Sandbox,
}

impl<'a> Session<'a> {
    /// Starts a kubelet and the plugin with `poll_ms`, and waits for the registration and the
    /// first device list.
    pub fn start(plugin: &'a Plugin, poll_ms: Option<u64>) -> Session<'a> {
        let sandbox = Sandbox::new();
        let kubelet = Kubelet::start(&sandbox.plugin_dir);
        let started = Instant::now();
        let daemon = plugin.spawn(&sandbox, poll_ms);
        wait_registered(&kubelet, plugin, started);
        let first_list = kubelet.next_list(&plugin.resource);
        Session {
            plugin,
            kubelet,
            daemon,
            first_list,
            sandbox,
        }
    }

    /// Returns the ID of the first device the plugin advertised.
    pub fn first_device(&self) -> String {
        let device = self.first_list.devices.first().unwrap_or_else(|| {
            panic!(
                "the plugin advertised no devices for {}, so Allocate has no device ID to request",
                self.plugin.resource
            );
        });
        device.ID.clone()
    }

    /// Stops the plugin with SIGTERM and waits for it to exit.
    pub fn stop(mut self) {
        self.daemon.signal(Signal::SIGTERM);
        self.daemon.wait_exit();
    }
}

/// Waits for the first registration of the plugin's resource accepted at or after `since`,
/// and fails unless it names the plugin's socket.
pub fn wait_registered(kubelet: &Kubelet, plugin: &Plugin, since: Instant) -> Registered {
    loop {
        let registered = kubelet.wait_registration_after(since);
        if registered.request.resource_name != plugin.resource {
            continue;
        }
        assert_eq!(
            registered.request.endpoint, plugin.socket,
            "expected {} to register socket {}",
            plugin.resource, plugin.socket
        );
        return registered;
    }
}
