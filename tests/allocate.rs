//! The DevicePlugin calls the kubelet makes while admitting a pod: Allocate,
//! GetPreferredAllocation and PreStartContainer.

mod support;

use grpcio::RpcStatusCode;
use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::{allocate_request, call_options, rpc_status, slot_ids, Sandbox, DEFAULT_SOCKET};
use tun_manager::api::api::{
    ContainerPreferredAllocationRequest, PreStartContainerRequest, PreferredAllocationRequest,
};
use tun_manager::api::api_grpc::DevicePluginClient;

/// Starts a kubelet and a daemon with `devices` slots, waits for the registration and returns
/// a client of the plugin.
fn start(sandbox: &Sandbox, devices: u32) -> (Kubelet, Daemon, DevicePluginClient) {
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let daemon = Daemon::start(sandbox, &["--devices", &devices.to_string()]);
    kubelet.wait_registrations(1);
    let client = kubelet.plugin_client(DEFAULT_SOCKET);
    (kubelet, daemon, client)
}

#[test]
fn allocate_device_spec() {
    let sandbox = Sandbox::new();
    let (_kubelet, _daemon, client) = start(&sandbox, 4);

    let request = allocate_request(&[&["tun0"], &["tun1", "tun2"], &["tun3"]]);
    let response = client
        .allocate_opt(&request, call_options())
        .expect("expected Allocate of tun0 to tun3 to succeed");
    assert_eq!(
        response.container_responses.len(),
        3,
        "expected one container response per container request"
    );
    let host_path = sandbox.device_path.display().to_string();
    for (index, container) in response.container_responses.iter().enumerate() {
        assert_eq!(
            container.devices.len(),
            1,
            "expected exactly one device spec for container {index}"
        );
        let spec = &container.devices[0];
        assert_eq!(
            spec.container_path, "/dev/net/tun",
            "expected container path /dev/net/tun for container {index}"
        );
        assert_eq!(
            spec.host_path, host_path,
            "expected the --device-path as host path for container {index}"
        );
        assert_eq!(
            spec.permissions, "rwm",
            "expected permissions rwm for container {index}"
        );
        assert!(
            container.mounts.is_empty(),
            "expected no mounts for container {index}"
        );
        assert!(
            container.envs.is_empty(),
            "expected no environment variables for container {index}"
        );
    }
}

#[test]
fn allocate_unknown_id() {
    let sandbox = Sandbox::new();
    let (_kubelet, _daemon, client) = start(&sandbox, 4);

    for id in ["tun4", "tun01", "tun-1", "gpu0", "TUN1", ""] {
        let request = allocate_request(&[&["tun0"], &[id]]);
        let status = rpc_status(
            client.allocate_opt(&request, call_options()),
            &format!("Allocate of unknown ID {id:?}"),
        );
        assert_eq!(
            status.code(),
            RpcStatusCode::INVALID_ARGUMENT,
            "expected INVALID_ARGUMENT for unknown ID {id:?}, got {status:?}"
        );
        assert!(
            status.message().contains(&format!("{id:?}")),
            "expected the message to name the unknown ID {id:?}: {}",
            status.message()
        );
    }
}

#[test]
fn allocate_duplicate_id() {
    let sandbox = Sandbox::new();
    let (_kubelet, _daemon, client) = start(&sandbox, 4);

    let cases: [&[&[&str]]; 2] = [
        &[&["tun1", "tun2", "tun1"]],
        &[&["tun2"], &["tun3", "tun2"]],
    ];
    for containers in cases {
        let request = allocate_request(containers);
        let status = rpc_status(
            client.allocate_opt(&request, call_options()),
            &format!("Allocate of {containers:?}"),
        );
        assert_eq!(
            status.code(),
            RpcStatusCode::INVALID_ARGUMENT,
            "expected INVALID_ARGUMENT for duplicate IDs in {containers:?}, got {status:?}"
        );
        let duplicate = if containers.len() == 1 {
            "tun1"
        } else {
            "tun2"
        };
        assert!(
            status.message().contains(&format!("{duplicate:?}")),
            "expected the message to name the duplicate ID {duplicate}: {}",
            status.message()
        );
    }
}

#[test]
fn allocate_empty_container_request() {
    let sandbox = Sandbox::new();
    let (_kubelet, _daemon, client) = start(&sandbox, 2);

    let request = allocate_request(&[&["tun0"], &[]]);
    let status = rpc_status(
        client.allocate_opt(&request, call_options()),
        "Allocate with a container request without IDs",
    );
    assert_eq!(
        status.code(),
        RpcStatusCode::INVALID_ARGUMENT,
        "expected INVALID_ARGUMENT for a container request without IDs, got {status:?}"
    );
}

#[test]
fn allocate_ten_thousand_ids() {
    let sandbox = Sandbox::new();
    let (_kubelet, mut daemon, client) = start(&sandbox, 10_000);
    let ids = slot_ids(10_000);
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    let one_container = allocate_request(&[&ids]);
    let response = client
        .allocate_opt(&one_container, call_options())
        .expect("expected Allocate of 10 000 IDs in one container to succeed");
    assert_eq!(
        response.container_responses.len(),
        1,
        "expected one container response for one container request"
    );

    let containers: Vec<&[&str]> = ids.chunks(1).collect();
    let many_containers = allocate_request(&containers);
    let response = client
        .allocate_opt(&many_containers, call_options())
        .expect("expected Allocate of 10 000 containers with one ID each to succeed");
    assert_eq!(
        response.container_responses.len(),
        10_000,
        "expected 10 000 container responses"
    );

    let mut past_the_pool = ids.clone();
    past_the_pool.push("tun10000");
    let status = rpc_status(
        client.allocate_opt(&allocate_request(&[&past_the_pool]), call_options()),
        "Allocate of 10 001 IDs",
    );
    assert_eq!(
        status.code(),
        RpcStatusCode::INVALID_ARGUMENT,
        "expected INVALID_ARGUMENT for tun10000 after 10 000 valid IDs, got {status:?}"
    );
    assert!(
        status.message().contains("\"tun10000\""),
        "expected the message to name tun10000: {}",
        status.message()
    );

    daemon.assert_running();
    let response = client
        .allocate_opt(&allocate_request(&[&["tun9999"]]), call_options())
        .expect("expected the daemon to keep serving Allocate after the large requests");
    assert_eq!(
        response.container_responses.len(),
        1,
        "expected one container response after the large requests"
    );
}

#[test]
fn allocate_oversized_request() {
    let sandbox = Sandbox::new();
    let (_kubelet, mut daemon, client) = start(&sandbox, 4);

    // About 6 MB of IDs, over gRPC's default 4 MiB receive limit.
    let ids = vec!["tun0"; 1_000_000];
    let status = rpc_status(
        client.allocate_opt(&allocate_request(&[&ids]), call_options()),
        "Allocate of 1 000 000 IDs",
    );
    assert_eq!(
        status.code(),
        RpcStatusCode::RESOURCE_EXHAUSTED,
        "expected RESOURCE_EXHAUSTED for a request over the message limit, got {status:?}"
    );

    daemon.assert_running();
    client
        .allocate_opt(&allocate_request(&[&["tun3"]]), call_options())
        .expect("expected the daemon to keep serving Allocate after the oversized request");
}

/// One container of a GetPreferredAllocation request and the response expected for it.
struct PreferredCase {
    available: &'static [&'static str],
    must_include: &'static [&'static str],
    size: i32,
    expected: &'static [&'static str],
}

#[test]
fn preferred_allocation_order() {
    let sandbox = Sandbox::new();
    let (_kubelet, _daemon, client) = start(&sandbox, 8);

    let cases = [
        PreferredCase {
            available: &["tun0", "tun1", "tun2", "tun3"],
            must_include: &["tun2"],
            size: 3,
            expected: &["tun2", "tun0", "tun1"],
        },
        PreferredCase {
            available: &["tun5", "tun4", "tun6"],
            must_include: &[],
            size: 2,
            expected: &["tun5", "tun4"],
        },
        PreferredCase {
            available: &["tun1", "tun7"],
            must_include: &["tun7", "tun1"],
            size: 2,
            expected: &["tun7", "tun1"],
        },
        PreferredCase {
            available: &["tun3", "tun4"],
            must_include: &[],
            size: 5,
            expected: &["tun3", "tun4"],
        },
    ];
    let mut request = PreferredAllocationRequest::new();
    for case in &cases {
        let mut container = ContainerPreferredAllocationRequest::new();
        container.available_deviceIDs = case.available.iter().map(|id| id.to_string()).collect();
        container.must_include_deviceIDs =
            case.must_include.iter().map(|id| id.to_string()).collect();
        container.allocation_size = case.size;
        request.container_requests.push(container);
    }
    let response = client
        .get_preferred_allocation_opt(&request, call_options())
        .expect("expected GetPreferredAllocation to succeed");
    assert_eq!(
        response.container_responses.len(),
        cases.len(),
        "expected one container response per container request"
    );
    for (case, container) in cases.iter().zip(&response.container_responses) {
        assert_eq!(
            container.deviceIDs, case.expected,
            "expected must-include IDs first, then available ones, up to {} \
             (available {:?}, must include {:?})",
            case.size, case.available, case.must_include
        );
    }
}

#[test]
fn pre_start_container_empty() {
    let sandbox = Sandbox::new();
    let (_kubelet, _daemon, client) = start(&sandbox, 2);

    let mut request = PreStartContainerRequest::new();
    request.devices_ids = vec!["tun0".into(), "tun1".into()];
    let response = client
        .pre_start_container_opt(&request, call_options())
        .expect("expected PreStartContainer to succeed");
    assert_eq!(
        response,
        Default::default(),
        "expected an empty PreStartContainer response"
    );
}
