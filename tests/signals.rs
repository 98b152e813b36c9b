//! Process lifecycle: SIGTERM and SIGINT stop the daemon cleanly, SIGHUP makes it register
//! again, and a second daemon on the same plugin directory is rejected.

mod support;

use nix::sys::signal::Signal;
use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::{allocate_request, call_options, Sandbox, DEFAULT_RESOURCE, DEFAULT_SOCKET};

const ALIAS_SOCKET: &str = "squat.ai_tun.sock";

/// Sends `signal` to a registered daemon serving two resources and checks that it exits with
/// status 0 and removes both sockets.
fn assert_clean_stop(signal: Signal) {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(
        &sandbox,
        &[
            "--resource-name",
            DEFAULT_RESOURCE,
            "--resource-name",
            "squat.ai/tun",
        ],
    );
    kubelet.wait_resources(&[DEFAULT_RESOURCE, "squat.ai/tun"]);
    kubelet.next_list(DEFAULT_RESOURCE);

    daemon.signal(signal);
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0 after {signal}, got {status}"
    );
    for socket in [DEFAULT_SOCKET, ALIAS_SOCKET] {
        assert!(
            !sandbox.socket(socket).exists(),
            "expected {socket} to be removed after {signal}"
        );
    }
    assert!(
        sandbox.socket("kubelet.sock").exists(),
        "expected the kubelet's socket to stay after {signal}"
    );
}

#[test]
fn sigterm_stops_cleanly() {
    assert_clean_stop(Signal::SIGTERM);
}

#[test]
fn sigint_stops_cleanly() {
    assert_clean_stop(Signal::SIGINT);
}

#[test]
fn sigterm_without_kubelet() {
    let sandbox = Sandbox::new();
    let mut daemon = Daemon::start(&sandbox, &[]);
    let socket = sandbox.socket(DEFAULT_SOCKET);
    support::wait_until("the plugin to serve its socket", || socket.exists());

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0 after SIGTERM without a kubelet, got {status}"
    );
    assert!(
        !socket.exists(),
        "expected {DEFAULT_SOCKET} to be removed after SIGTERM"
    );
}

#[test]
fn sighup_reregisters() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &["--devices", "2"]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);

    for round in 1..=3 {
        daemon.signal(Signal::SIGHUP);
        let registered = kubelet.wait_registrations(1).remove(0);
        assert_eq!(
            registered.request.resource_name, DEFAULT_RESOURCE,
            "expected the resource to register again after SIGHUP {round}"
        );
        let list = kubelet.next_list(DEFAULT_RESOURCE);
        assert_eq!(
            list.devices.len(),
            2,
            "expected the full list after SIGHUP {round}"
        );
    }
    daemon.assert_running();
}

#[test]
fn second_instance_rejected() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut first = Daemon::start(&sandbox, &[]);
    kubelet.wait_registrations(1);

    let mut second = Daemon::start(&sandbox, &[]);
    let status = second.wait_exit();
    let output = second.output();
    assert_eq!(
        status.code(),
        Some(1),
        "expected the second daemon to exit with status 1, got {status}; output:\n{output}"
    );
    let socket = sandbox.socket(DEFAULT_SOCKET).display().to_string();
    assert!(
        output.contains(&socket),
        "expected the second daemon to name {socket}:\n{output}"
    );

    first.assert_running();
    assert!(
        sandbox.socket(DEFAULT_SOCKET).exists(),
        "expected the first daemon's socket to stay"
    );
    let response = kubelet
        .plugin_client(DEFAULT_SOCKET)
        .allocate_opt(&allocate_request(&[&["tun0"]]), call_options())
        .expect("expected the first daemon to keep serving Allocate");
    assert_eq!(
        response.container_responses.len(),
        1,
        "expected one container response from the first daemon"
    );
}

#[test]
fn sigterm_during_register() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    // The kubelet delays its Register response until `_release` is dropped at the end.
    let _release = kubelet.end_stream_before_reply();
    let mut daemon = Daemon::start(&sandbox, &[]);
    kubelet.next_list(DEFAULT_RESOURCE);

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit();
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0 after SIGTERM with a Register call in flight, got {status}"
    );
    assert!(
        !sandbox.socket(DEFAULT_SOCKET).exists(),
        "expected {DEFAULT_SOCKET} to be removed after SIGTERM"
    );
}

#[test]
fn regular_file_at_socket_kept() {
    let sandbox = Sandbox::new();
    let socket = sandbox.socket(DEFAULT_SOCKET);
    std::fs::write(&socket, b"not a socket").expect("write a regular file at the socket path");

    let mut daemon = Daemon::start(&sandbox, &[]);
    let status = daemon.wait_exit();
    let output = daemon.output();
    assert_eq!(
        status.code(),
        Some(1),
        "expected exit status 1 with a regular file at the socket path, got {status}:\n{output}"
    );
    assert!(
        output.contains("is not a socket"),
        "expected the error to say the path is not a socket:\n{output}"
    );
    let content = std::fs::read(&socket).expect("expected the regular file to stay");
    assert_eq!(
        content, b"not a socket",
        "expected the regular file to keep its content"
    );
}
