//! The real tun device: a process in a fresh network namespace opens the host path from the
//! Allocate response and creates a tun interface there, as a container given the slot would.
//!
//! Needs root, a kernel with the tun driver and a host `/dev/net/tun`.

mod support;

use std::path::Path;

use nix::net::if_::if_nametoindex;
use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::tun::{create_interface_in_new_namespace, thread_namespace};
use support::{allocate_request, call_options, require_root, Sandbox};
use support::{DEFAULT_RESOURCE, DEFAULT_SOCKET};

/// Name of the tun interface the test creates. The kernel allows at most 15 bytes
/// (IFNAMSIZ - 1).
const INTERFACE: &str = "tunmgr-test0";

#[test]
fn allocated_path_creates_interface() {
    require_root("enters a network namespace and creates a tun interface");
    let sandbox = Sandbox::empty();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    // The host's real /dev/net/tun and /sys, which are the defaults.
    let plugin_dir = sandbox.plugin_dir.display().to_string();
    let args = ["--plugin-dir", plugin_dir.as_str(), "--devices", "2"].map(String::from);
    let _daemon = Daemon::start_with_args(&sandbox, &args);
    kubelet.wait_registrations(1);
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert!(
        list.devices.iter().all(|device| device.health == "Healthy"),
        "expected the host's /dev/net/tun to be Healthy; is the tun module loaded?"
    );

    let response = kubelet
        .plugin_client(DEFAULT_SOCKET)
        .allocate_opt(&allocate_request(&[&["tun1"]]), call_options())
        .expect("expected Allocate of tun1 to succeed");
    let spec = response
        .container_responses
        .first()
        .and_then(|container| container.devices.first())
        .expect("expected a device spec in the Allocate response");
    assert_eq!(
        spec.host_path, "/dev/net/tun",
        "expected the default host path"
    );
    let host_path = Path::new(&spec.host_path).to_owned();

    let report = std::thread::Builder::new()
        .name("new-netns".into())
        .spawn(move || create_interface_in_new_namespace(&host_path, INTERFACE, || {}))
        .expect("spawn the thread for the new network namespace")
        .join()
        .expect("the namespace thread panicked")
        .unwrap_or_else(|error| panic!("expected to create {INTERFACE}: {error}"));

    assert_ne!(
        report.namespace,
        thread_namespace(),
        "expected the thread to run in a network namespace of its own"
    );
    assert!(
        !report.existed_before,
        "expected no {INTERFACE} in the fresh namespace before TUNSETIFF"
    );
    let index = report
        .index_after
        .unwrap_or_else(|error| panic!("expected {INTERFACE} in the new namespace: {error}"));
    assert!(
        index > 0,
        "expected a positive interface index, got {index}"
    );
    assert!(
        if_nametoindex(INTERFACE).is_err(),
        "expected no {INTERFACE} in the test's own network namespace"
    );
}
