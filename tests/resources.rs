//! Several resource names at once: each has its own socket, registration and slot pool.

mod support;

use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::{allocate_request, call_options, Sandbox, DEFAULT_RESOURCE, DEFAULT_SOCKET};

const ALIAS_RESOURCE: &str = "squat.ai/tun";
const ALIAS_SOCKET: &str = "squat.ai_tun.sock";

/// Starts a daemon that advertises the default resource and `squat.ai/tun`.
fn start_two(sandbox: &Sandbox) -> Daemon {
    Daemon::start(
        sandbox,
        &[
            "--devices",
            "3",
            "--resource-name",
            DEFAULT_RESOURCE,
            "--resource-name",
            ALIAS_RESOURCE,
        ],
    )
}

/// Waits until both resources have registered, and checks that each registered its own socket.
fn wait_both_registered(kubelet: &Kubelet, when: &str) {
    for registered in kubelet.wait_resources(&[DEFAULT_RESOURCE, ALIAS_RESOURCE]) {
        let resource = registered.request.resource_name.as_str();
        let socket = if resource == DEFAULT_RESOURCE {
            DEFAULT_SOCKET
        } else {
            ALIAS_SOCKET
        };
        assert_eq!(
            registered.request.endpoint, socket,
            "expected {resource} to register its own socket {when}"
        );
    }
}

#[test]
fn two_resources_register() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = start_two(&sandbox);

    wait_both_registered(&kubelet, "at startup");
    for resource in [DEFAULT_RESOURCE, ALIAS_RESOURCE] {
        let list = kubelet.next_list(resource);
        assert_eq!(
            list.devices.len(),
            3,
            "expected 3 slots in the first list of {resource}"
        );
    }
}

#[test]
fn two_resources_allocate() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = start_two(&sandbox);
    wait_both_registered(&kubelet, "at startup");

    let host_path = sandbox.device_path.display().to_string();
    for socket in [DEFAULT_SOCKET, ALIAS_SOCKET] {
        let client = kubelet.plugin_client(socket);
        // Each resource has its own pool, so both may hand out tun0 at the same time.
        let response = client
            .allocate_opt(&allocate_request(&[&["tun0", "tun2"]]), call_options())
            .unwrap_or_else(|error| panic!("expected Allocate on {socket} to succeed: {error}"));
        assert_eq!(
            response.container_responses.len(),
            1,
            "expected one container response from {socket}"
        );
        let devices = &response.container_responses[0].devices;
        assert_eq!(devices.len(), 1, "expected one device spec from {socket}");
        assert_eq!(
            devices[0].host_path, host_path,
            "expected the --device-path as host path from {socket}"
        );
    }
}

#[test]
fn two_resources_kubelet_restart() {
    let sandbox = Sandbox::new();
    let mut kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = start_two(&sandbox);
    wait_both_registered(&kubelet, "at startup");

    for restart in 1..=3 {
        kubelet.restart();
        wait_both_registered(&kubelet, &format!("after kubelet restart {restart}"));
        for resource in [DEFAULT_RESOURCE, ALIAS_RESOURCE] {
            let list = kubelet.next_list(resource);
            assert_eq!(
                list.devices.len(),
                3,
                "expected 3 slots for {resource} after kubelet restart {restart}"
            );
        }
    }
    daemon.assert_running();
}

#[test]
fn one_socket_deleted() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = start_two(&sandbox);
    wait_both_registered(&kubelet, "at startup");
    kubelet.next_list(DEFAULT_RESOURCE);
    kubelet.next_list(ALIAS_RESOURCE);

    std::fs::remove_file(sandbox.socket(ALIAS_SOCKET)).expect("delete the squat.ai/tun socket");
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.resource_name, ALIAS_RESOURCE,
        "expected only squat.ai/tun to register again after its socket was deleted"
    );
    let response = kubelet
        .plugin_client(DEFAULT_SOCKET)
        .allocate_opt(&allocate_request(&[&["tun1"]]), call_options())
        .expect("expected the default resource to keep serving Allocate");
    assert_eq!(
        response.container_responses.len(),
        1,
        "expected one container response from the default resource"
    );
}

#[test]
fn two_resources_share_health() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = start_two(&sandbox);
    wait_both_registered(&kubelet, "at startup");
    for resource in [DEFAULT_RESOURCE, ALIAS_RESOURCE] {
        kubelet.next_list(resource);
    }

    std::fs::remove_file(&sandbox.device_path).expect("remove the device node");
    for resource in [DEFAULT_RESOURCE, ALIAS_RESOURCE] {
        let list = kubelet.next_list(resource);
        assert!(
            list.devices
                .iter()
                .all(|device| device.health == "Unhealthy"),
            "expected every slot of {resource} to be Unhealthy after the node was removed"
        );
    }
}
