//! Soak tests: events that happen to a node over a long uptime, repeated back to back, checking
//! that the daemon recovers every time and keeps no more threads or file descriptors after the
//! run than before it.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::CallOption;
use nix::sys::signal::Signal;
use support::daemon::Daemon;
use support::devnode::{make_tun_node, remove_node};
use support::kubelet::{Kubelet, Registered};
use support::procfs::{ProcessCounts, GRPC_POOL_THREAD};
use support::{allocate_request, wait_until, Sandbox, DEFAULT_RESOURCE, DEFAULT_SOCKET};
use tun_manager::api::api::ListAndWatchResponse;

/// Poll interval for the restart and deletion runs, whose recovery starts on a poll tick. At 20 ms,
/// 100 kubelet restarts take a few seconds, and 100 deletions take about 30 s because the daemon
/// waits 300 ms after ending the kubelet's stream before it registers with the same kubelet.
const FAST_POLL_MS: &str = "20";
/// Rounds of each repeated event.
const ROUNDS: usize = 100;
/// Concurrent Allocate callers while SIGTERM arrives.
const CALLERS: usize = 32;
/// Successful Allocate calls to wait for before SIGTERM, so that every caller is under way.
const CALLS_BEFORE_SIGTERM: usize = 2_000;
/// Upper bound on the calls of one caller, in case the daemon never stops.
const MAX_CALLS_PER_CALLER: usize = 1_000_000;
/// Removals and recreations of the device node in the flapping tests.
const FLAPS: usize = 200;
/// Pause after each removal and each recreation, so that the daemon, polling every 10 ms,
/// samples both states many times during the run.
const FLAP_PAUSE: Duration = Duration::from_millis(1);

/// Waits for the daemon's first registration after `since` and fails unless it is the default
/// resource on its default socket.
fn wait_registration_after(kubelet: &Kubelet, since: Instant, round: &str) -> Registered {
    let registered = kubelet.wait_registration_after(since);
    assert_eq!(
        registered.request.resource_name, DEFAULT_RESOURCE,
        "expected the default resource to register after {round}"
    );
    assert_eq!(
        registered.request.endpoint, DEFAULT_SOCKET,
        "expected the plugin to register {DEFAULT_SOCKET} after {round}"
    );
    registered
}

/// Waits for the thread and file descriptor counts of `daemon` to return to `before`, then
/// fails unless both are equal to it. Threads of gRPC's event engine pool are left out of the
/// thread count: their number is gRPC's to choose, and a busy spell raises it for 30 s.
fn assert_counts_settle(daemon: &Daemon, before: ProcessCounts, run: &str) {
    let after = ProcessCounts::settle(daemon.pid(), before);
    assert_eq!(
        after.fixed_threads(),
        before.fixed_threads(),
        "expected as many daemon threads outside the {GRPC_POOL_THREAD} pool after {run} as \
         before it (before: {before:?}, after: {after:?})"
    );
    assert_eq!(
        after.open_fds, before.open_fds,
        "expected as many open file descriptors in the daemon after {run} as before it \
         (before: {before:?}, after: {after:?})"
    );
}

#[test]
fn kubelet_restarts_leak_nothing() {
    let sandbox = Sandbox::new();
    let mut kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &["--poll-interval-ms", FAST_POLL_MS]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);
    let before = ProcessCounts::steady(daemon.pid());

    for round in 1..=ROUNDS {
        kubelet.restart();
        let restart = format!("kubelet restart {round}");
        wait_registration_after(&kubelet, kubelet.served_at(), &restart);
        let list = kubelet.next_list(DEFAULT_RESOURCE);
        assert!(
            !list.devices.is_empty(),
            "expected a device list on the new stream after {restart}"
        );
    }

    daemon.assert_running();
    assert_counts_settle(&daemon, before, &format!("{ROUNDS} kubelet restarts"));
}

#[test]
fn plugin_socket_deletions_recovered() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &["--poll-interval-ms", FAST_POLL_MS]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);
    let before = ProcessCounts::steady(daemon.pid());
    let socket = sandbox.socket(DEFAULT_SOCKET);

    for round in 1..=ROUNDS {
        let deleted_at = Instant::now();
        std::fs::remove_file(&socket).unwrap_or_else(|error| {
            panic!(
                "failed to delete {} in round {round}: {error}",
                socket.display()
            )
        });
        let deletion = format!("plugin socket deletion {round}");
        wait_registration_after(&kubelet, deleted_at, &deletion);
        assert!(
            socket.exists(),
            "expected {} to be served again after {deletion}",
            socket.display()
        );
        let list = kubelet.next_list(DEFAULT_RESOURCE);
        assert!(
            !list.devices.is_empty(),
            "expected a device list on the new stream after {deletion}"
        );
    }

    daemon.assert_running();
    assert_counts_settle(
        &daemon,
        before,
        &format!("{ROUNDS} plugin socket deletions"),
    );
}

#[test]
fn sigterm_under_allocate_load() {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let mut daemon = Daemon::start(&sandbox, &[]);
    kubelet.wait_registrations(1);
    kubelet.next_list(DEFAULT_RESOURCE);

    let client = kubelet.plugin_client(DEFAULT_SOCKET);
    let completed = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let client = client.clone();
            let completed = Arc::clone(&completed);
            let stop = Arc::clone(&stop);
            let request = allocate_request(&[&[&format!("tun{caller}")]]);
            std::thread::spawn(move || {
                // No wait_for_ready: once the daemon is gone, calls fail at once.
                let options = CallOption::default().timeout(support::TIMEOUT);
                for _ in 0..MAX_CALLS_PER_CALLER {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    if client.allocate_opt(&request, options.clone()).is_err() {
                        return;
                    }
                    completed.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_until("Allocate calls from every caller to complete", || {
        completed.load(Ordering::Relaxed) >= CALLS_BEFORE_SIGTERM
    });

    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit();
    stop.store(true, Ordering::Relaxed);
    for caller in callers {
        caller.join().expect("an Allocate caller panicked");
    }

    let output = daemon.output();
    assert_eq!(
        status.code(),
        Some(0),
        "expected exit status 0 after SIGTERM under Allocate load, got {status}; output:\n{output}"
    );
    assert!(
        !sandbox.socket(DEFAULT_SOCKET).exists(),
        "expected {DEFAULT_SOCKET} to be removed after SIGTERM under Allocate load"
    );
    assert!(
        !output.contains("panicked"),
        "expected no panic in the daemon's log:\n{output}"
    );
}

/// Returns the health of the devices in `list`, failing unless there are `slots` of them and
/// all have the same health.
fn uniform_health(list: &ListAndWatchResponse, slots: usize) -> String {
    assert_eq!(
        list.devices.len(),
        slots,
        "expected {slots} slots in every list"
    );
    let health = list.devices[0].health.clone();
    for device in &list.devices {
        assert_eq!(
            device.health, health,
            "expected slot {} to have the health of slot tun0 in the same list",
            device.ID
        );
    }
    health
}

/// Removes and recreates the device node `FLAPS` times, then leaves it present or absent, and
/// checks that the last health the daemon sent is the one the final state calls for.
fn flap_device_node(end_present: bool) {
    const SLOTS: usize = 2;
    let expected = if end_present { "Healthy" } else { "Unhealthy" };
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let _daemon = Daemon::start(
        &sandbox,
        &["--devices", &SLOTS.to_string(), "--poll-interval-ms", "10"],
    );
    kubelet.wait_registrations(1);
    let mut latest = uniform_health(&kubelet.next_list(DEFAULT_RESOURCE), SLOTS);

    for _ in 0..FLAPS {
        remove_node(&sandbox.device_path);
        std::thread::sleep(FLAP_PAUSE);
        make_tun_node(&sandbox.device_path);
        std::thread::sleep(FLAP_PAUSE);
    }
    if !end_present {
        remove_node(&sandbox.device_path);
    }

    // The daemon publishes a list only when health changes, so the list it sent last on the
    // stream shows the health it last saw.
    wait_until(&format!("a {expected} list after the flapping"), || {
        while let Some(list) = kubelet.try_list(DEFAULT_RESOURCE) {
            latest = uniform_health(&list, SLOTS);
        }
        latest == expected
    });

    // Ending the stream makes the daemon check the device before it registers again, and the
    // kubelet joins the old stream's thread, so every list sent on it has arrived.
    let ended_at = Instant::now();
    kubelet.end_streams();
    while let Some(list) = kubelet.try_list(DEFAULT_RESOURCE) {
        latest = uniform_health(&list, SLOTS);
    }
    assert_eq!(
        latest, expected,
        "expected the last list on the stream to be {expected} after {FLAPS} flaps"
    );
    wait_registration_after(&kubelet, ended_at, "the stream ended");
    let current = uniform_health(&kubelet.next_list(DEFAULT_RESOURCE), SLOTS);
    assert_eq!(
        current, expected,
        "expected the first list on the new stream to be {expected} after {FLAPS} flaps"
    );
}

#[test]
fn flapping_node_ends_present() {
    flap_device_node(true);
}

#[test]
fn flapping_node_ends_absent() {
    flap_device_node(false);
}
