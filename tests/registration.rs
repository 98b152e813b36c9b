//! Registration with the kubelet: the Register request, the dial-back, the first device list,
//! a kubelet that appears late and a stream that the kubelet ends.

mod support;

use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::{slot_ids, wait_until, Sandbox, DEFAULT_RESOURCE, DEFAULT_SOCKET};

#[test]
fn register_request_fields() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = Daemon::start(&sandbox, &["--devices", "3"]);

    let registered = kubelet.wait_registrations(1).remove(0);
    let request = &registered.request;
    assert_eq!(request.version, "v1beta1", "expected API version v1beta1");
    assert_eq!(
        request.endpoint, DEFAULT_SOCKET,
        "expected the socket file name of the default resource as endpoint"
    );
    assert_eq!(
        request.resource_name, DEFAULT_RESOURCE,
        "expected the default resource name"
    );
    let options = request
        .options
        .as_ref()
        .expect("expected the Register request to carry device-plugin options");
    assert!(
        !options.pre_start_required,
        "expected Register options without PreStartContainer"
    );
    assert!(
        !options.get_preferred_allocation_available,
        "expected Register options without GetPreferredAllocation"
    );
    assert_eq!(
        &registered.options, options,
        "expected GetDevicePluginOptions to return the options sent in Register"
    );
}

#[test]
fn first_list_healthy_slots() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = Daemon::start(&sandbox, &["--devices", "5"]);

    kubelet.wait_registrations(1);
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    let ids: Vec<&str> = list
        .devices
        .iter()
        .map(|device| device.ID.as_str())
        .collect();
    assert_eq!(ids, slot_ids(5), "expected slots tun0 to tun4 in order");
    for device in &list.devices {
        assert_eq!(
            device.health, "Healthy",
            "expected slot {} to be Healthy",
            device.ID
        );
    }
}

#[test]
fn first_list_max_devices() {
    // 100 000 slots is the --devices maximum. The list must stay under gRPC's default 4 MiB
    // receive limit, which both the kubelet and the stand-in kubelet's client apply.
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = Daemon::start(&sandbox, &["--devices", "100000"]);

    kubelet.wait_registrations(1);
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert_eq!(
        list.devices.len(),
        100_000,
        "expected 100 000 slots in the first list"
    );
    let last = list.devices.last().map(|device| device.ID.as_str());
    assert_eq!(last, Some("tun99999"), "expected tun99999 as the last slot");
}

#[test]
fn kubelet_absent_at_start() {
    let sandbox = Sandbox::new();
    let mut daemon = Daemon::start(&sandbox, &["--devices", "2"]);
    let socket = sandbox.socket(DEFAULT_SOCKET);
    // The daemon logs "supervising" once its sockets are set up. Waiting for it keeps this
    // test apart from a kubelet that deletes the socket during startup, which
    // socket_deleted_during_startup covers.
    wait_until("the daemon to log that it is supervising", || {
        daemon.output().contains("supervising")
    });
    assert!(
        socket.exists(),
        "expected the plugin to serve {DEFAULT_SOCKET} without a kubelet"
    );
    daemon.assert_running();

    // The kubelet deletes the plugin's socket when it starts, as the real one does.
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.resource_name, DEFAULT_RESOURCE,
        "expected the default resource to register once the kubelet appeared"
    );
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert_eq!(
        list.devices.len(),
        2,
        "expected a list of 2 slots on the new stream"
    );
}

#[test]
fn kubelet_socket_without_server() {
    let sandbox = Sandbox::new();
    // A stale kubelet.sock with no server behind it, so Register fails until the kubelet is
    // back.
    let stale = std::os::unix::net::UnixListener::bind(sandbox.socket("kubelet.sock"))
        .expect("bind a stale kubelet.sock");
    drop(stale);
    let mut daemon = Daemon::start(&sandbox, &[]);
    wait_until("the daemon to log a failed Register", || {
        daemon.output().contains("failed to register")
    });
    daemon.assert_running();

    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.endpoint, DEFAULT_SOCKET,
        "expected a registration once the kubelet serves its socket"
    );
}

#[test]
fn stream_end_reregisters() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &["--devices", "2"]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);

    kubelet.end_streams();
    assert!(
        sandbox.socket(DEFAULT_SOCKET).exists(),
        "expected the plugin socket to stay when only the stream ends"
    );
    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.resource_name, DEFAULT_RESOURCE,
        "expected the resource to register again after its stream ended"
    );
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert_eq!(
        list.devices.len(),
        2,
        "expected the full list on the stream opened after registering again"
    );
    daemon.assert_running();
}

#[test]
fn rejected_register_retried() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    kubelet.reject_registrations(3);
    let mut daemon = Daemon::start(&sandbox, &[]);

    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.resource_name, DEFAULT_RESOURCE,
        "expected the resource to register after 3 rejected attempts"
    );
    assert_eq!(
        kubelet.rejections_left(),
        0,
        "expected the daemon to use up all 3 rejections before it registered"
    );
    kubelet.next_list(DEFAULT_RESOURCE);
    daemon.assert_running();
}

#[test]
fn stream_end_before_reply() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let release = kubelet.end_stream_before_reply();
    let daemon = Daemon::start(&sandbox, &["--devices", "2"]);

    kubelet.next_list(DEFAULT_RESOURCE);
    // The daemon logs this line when its stream thread detects the end, just before it reports
    // the end to the supervisor. The kubelet holds back its Register response until then.
    wait_until("the daemon to see the end of its first stream", || {
        daemon.output().contains("kubelet ended ListAndWatch")
    });
    release
        .send(())
        .expect("release the held Register response");
    kubelet.wait_registrations(1);

    let registered = kubelet.wait_registrations(1).remove(0);
    assert_eq!(
        registered.request.resource_name, DEFAULT_RESOURCE,
        "expected the resource to register again because the stream of its registration ended"
    );
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert_eq!(
        list.devices.len(),
        2,
        "expected the full list on the new stream"
    );
}
