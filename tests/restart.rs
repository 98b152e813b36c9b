//! Recovery after the kubelet restarts or goes away, and after the plugin socket is deleted.

mod support;

use std::os::unix::net::UnixListener;
use std::time::Instant;

use nix::sys::signal::Signal;

use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::{
    allocate_request, call_options, wait_until, Sandbox, DEFAULT_RESOURCE, DEFAULT_SOCKET, TIMEOUT,
};

#[test]
fn kubelet_restart_twenty_times() {
    let sandbox = Sandbox::new();
    let mut kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &["--devices", "3"]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);

    for restart in 1..=20 {
        kubelet.restart();
        let registered = kubelet.wait_registrations(1).remove(0);
        assert_eq!(
            registered.request.endpoint, DEFAULT_SOCKET,
            "expected the plugin to register {DEFAULT_SOCKET} after kubelet restart {restart}"
        );
        let list = kubelet.next_list(DEFAULT_RESOURCE);
        assert_eq!(
            list.devices.len(),
            3,
            "expected the full list on the new stream after kubelet restart {restart}"
        );
    }
    daemon.assert_running();
    let response = kubelet
        .plugin_client(DEFAULT_SOCKET)
        .allocate_opt(&allocate_request(&[&["tun2"]]), call_options())
        .expect("expected Allocate on the socket served after 20 kubelet restarts");
    assert_eq!(
        response.container_responses.len(),
        1,
        "expected one container response after 20 kubelet restarts"
    );
}

#[test]
fn kubelet_crash_then_back() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &[]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);

    // A crashed kubelet leaves its socket behind with no server on it, so the plugin's
    // Register calls fail and back off until a new kubelet starts.
    drop(kubelet);
    let stale =
        UnixListener::bind(sandbox.socket("kubelet.sock")).expect("bind a stale kubelet.sock");
    drop(stale);
    wait_until(
        "the daemon to fail 3 Register calls with the crashed kubelet",
        || daemon.output().matches("failed to register").count() >= 3,
    );
    daemon.assert_running();

    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.resource_name, DEFAULT_RESOURCE,
        "expected the default resource to register with the new kubelet"
    );
    kubelet.next_list(DEFAULT_RESOURCE);
}

#[test]
fn plugin_socket_deleted() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = Daemon::start(&sandbox, &["--devices", "2"]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);

    let socket = sandbox.socket(DEFAULT_SOCKET);
    std::fs::remove_file(&socket).expect("delete the plugin socket");
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.endpoint, DEFAULT_SOCKET,
        "expected the plugin to serve {DEFAULT_SOCKET} again and register it"
    );
    assert!(
        socket.exists(),
        "expected {} to exist again",
        socket.display()
    );
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert_eq!(
        list.devices.len(),
        2,
        "expected the full list on the stream of the new socket"
    );
}

#[test]
fn daemon_killed_then_restarted() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut first = Daemon::start(&sandbox, &[]);
    kubelet.wait_registrations(1);

    // SIGKILL leaves the plugin socket behind with no server on it.
    first.signal(Signal::SIGKILL);
    first.wait_exit();
    assert!(
        sandbox.socket(DEFAULT_SOCKET).exists(),
        "expected the killed daemon to leave {DEFAULT_SOCKET} behind"
    );

    let mut second = Daemon::start(&sandbox, &[]);
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.endpoint, DEFAULT_SOCKET,
        "expected the new daemon to replace the stale socket and register it"
    );
    second.assert_running();
}

#[test]
fn socket_deleted_during_startup() {
    // A kubelet that starts together with the plugin deletes every socket in the directory,
    // possibly while the plugin is still setting its socket up. The window is short, so the
    // test starts the daemon several times and spins rather than sleeps, to delete the socket
    // as soon as it exists.
    const STARTS: usize = 20;
    let sandbox = Sandbox::new();
    let socket = sandbox.socket(DEFAULT_SOCKET);
    let kubelet = Kubelet::start(&sandbox.plugin_dir);

    for start in 1..=STARTS {
        // Registrations left over from the previous daemon must not count for this one.
        while kubelet.try_registration().is_some() {}
        let mut daemon = Daemon::start(&sandbox, &[]);
        let deadline = Instant::now() + TIMEOUT;
        while std::fs::remove_file(&socket).is_err() {
            assert!(
                Instant::now() < deadline,
                "timed out after {TIMEOUT:?} waiting for {} to appear (start {start})",
                socket.display()
            );
            std::hint::spin_loop();
        }

        let mut registered = None;
        wait_until("the daemon to register or exit", || {
            registered = kubelet.try_registration();
            registered.is_some() || daemon.has_exited()
        });
        daemon.assert_running();
        let registered = registered.expect("a registration, as the daemon is running");
        assert_eq!(
            registered.request.endpoint, DEFAULT_SOCKET,
            "expected the plugin to serve its socket again and register (start {start})"
        );
        daemon.signal(Signal::SIGTERM);
        let status = daemon.wait_exit();
        assert_eq!(
            status.code(),
            Some(0),
            "expected exit status 0 after SIGTERM (start {start}), got {status}"
        );
    }
}
