//! The walkthrough behind `scripts/demo`: tun-manager against the stand-in kubelet from the
//! integration tests, in a temporary plugin directory, one step at a time.
//!
//! Usage: `demo <path to tun-manager>`. Needs root for the network namespace.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::kubelet::Kubelet;
use support::tun::create_interface_in_new_namespace;
use support::{allocate_request, call_options, Sandbox, DEFAULT_RESOURCE, DEFAULT_SOCKET};

/// Name of the tun interface the demo creates in its network namespace.
const INTERFACE: &str = "demo-tun0";

fn main() -> ExitCode {
    let Some(binary) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: demo <path to the tun-manager binary>");
        return ExitCode::from(2);
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("demo: run as root; creating a network namespace needs it");
        return ExitCode::from(2);
    }
    // The stand-in kubelet reports failures by panicking; show only the message.
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("unknown error");
        eprintln!("\ndemo failed: {message}");
    }));
    match std::panic::catch_unwind(|| run(&binary)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("\ndemo failed: {message}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::FAILURE,
    }
}

fn step(text: &str) {
    println!("\n==> {text}");
}

fn run(binary: &Path) -> Result<(), String> {
    let sandbox = Sandbox::empty();
    let plugin_dir = &sandbox.plugin_dir;

    step(&format!(
        "Start a stand-in kubelet serving {}/kubelet.sock",
        plugin_dir.display()
    ));
    let kubelet = Kubelet::start(plugin_dir);

    step("Start tun-manager with its defaults and that plugin directory (its log follows)");
    let daemon = Command::new(binary)
        .arg("--plugin-dir")
        .arg(plugin_dir)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|error| format!("failed to start {}: {error}", binary.display()))?;
    let mut daemon = KillOnDrop(daemon);

    let registration = kubelet.wait_registrations(1).remove(0);
    let request = &registration.request;
    step(&format!(
        "The kubelet accepted Register: version {}, resource {}, endpoint {}",
        request.version, request.resource_name, request.endpoint
    ));

    let list = kubelet.next_list(DEFAULT_RESOURCE);
    let healthy = list
        .devices
        .iter()
        .filter(|d| d.health == "Healthy")
        .count();
    let first = list.devices.first().map_or("", |d| d.ID.as_str());
    let last = list.devices.last().map_or("", |d| d.ID.as_str());
    step(&format!(
        "ListAndWatch advertises {} slots, {first} to {last}, {healthy} of them Healthy",
        list.devices.len()
    ));

    let response = kubelet
        .plugin_client(DEFAULT_SOCKET)
        .allocate_opt(&allocate_request(&[&["tun0"]]), call_options())
        .map_err(|error| format!("Allocate of tun0 failed: {error}"))?;
    let spec = response
        .container_responses
        .first()
        .and_then(|container| container.devices.first())
        .ok_or("the Allocate response has no device spec")?;
    step(&format!(
        "Allocate tun0 returns the device spec: container {}, host {}, permissions {}",
        spec.container_path, spec.host_path, spec.permissions
    ));

    step(&format!(
        "In a new network namespace, open {} and create tun interface {INTERFACE} with TUNSETIFF",
        spec.host_path
    ));
    let host_path = PathBuf::from(&spec.host_path);
    let created = std::thread::Builder::new()
        .name("demo-netns".into())
        .spawn(move || {
            create_interface_in_new_namespace(&host_path, INTERFACE, || {
                // A child process starts in the thread's network namespace.
                let listed = Command::new("ip")
                    .args(["-details", "link", "show", "dev", INTERFACE])
                    .status();
                if let Err(error) = listed {
                    println!("(could not run `ip link show`: {error})");
                }
            })
        })
        .map_err(|error| format!("failed to spawn the namespace thread: {error}"))?
        .join()
        .map_err(|_| "the namespace thread panicked".to_owned())??;
    let index = created
        .index_after
        .map_err(|error| format!("{INTERFACE} does not exist after TUNSETIFF: {error}"))?;
    println!(
        "{INTERFACE} existed in {} with index {index}; it is gone now that the file is closed",
        created.namespace
    );

    step("Send SIGTERM to tun-manager");
    let pid = Pid::from_raw(i32::try_from(daemon.0.id()).map_err(|e| e.to_string())?);
    kill(pid, Signal::SIGTERM).map_err(|errno| format!("failed to send SIGTERM: {errno}"))?;
    let status = daemon
        .0
        .wait()
        .map_err(|error| format!("failed to wait for tun-manager: {error}"))?;
    let socket = plugin_dir.join(DEFAULT_SOCKET);
    println!(
        "tun-manager exited with {status}; {} {}",
        socket.display(),
        if socket.exists() {
            "is still there"
        } else {
            "was removed"
        }
    );
    step("Done; the temporary plugin directory is removed on exit");
    Ok(())
}

/// The daemon process, killed if the demo stops early.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
