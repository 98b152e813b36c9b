//! Lifecycle latencies: start to registered, kubelet restart to registered again, and device
//! node removed to `Unhealthy` on the ListAndWatch stream.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::plugin::{wait_registered, Plugin, Session};
use crate::support::devnode::{make_tun_node, remove_node};
use crate::support::kubelet::Kubelet;
use crate::support::Sandbox;

/// Fractional part of the golden ratio. Its multiples mod 1 spread evenly over [0, 1).
const GOLDEN_FRACTION: f64 = 0.618_033_988_749_895;

/// Returns the delay before event `round`, spread evenly over [0, `interval`). The plugin
/// notices most events on its next poll tick, so events sent right after the previous
/// registration would all fall at the same phase of its poll cycle and measure the worst case.
pub fn phase_delay(round: usize, interval: Duration) -> Duration {
    interval.mul_f64((round as f64 * GOLDEN_FRACTION).fract())
}

/// Starts the plugin `starts` times and returns, for each start, the time from spawning the
/// process to the kubelet's reply to its Register call. Each instance gets SIGTERM before the
/// next one starts.
pub fn start_to_registered(plugin: &Plugin, starts: usize, poll_ms: Option<u64>) -> Vec<Duration> {
    let sandbox = Sandbox::new();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    (0..starts)
        .map(|_| {
            let started = Instant::now();
            let mut daemon = plugin.spawn(&sandbox, poll_ms);
            let registered = wait_registered(&kubelet, plugin, started);
            kubelet.next_list(&plugin.resource);
            daemon.signal(Signal::SIGTERM);
            daemon.wait_exit();
            registered.at - started
        })
        .collect()
}

/// Restarts the kubelet `restarts` times under the plugin of `session`, and returns, for each
/// restart, the time from the new kubelet.sock serving to the kubelet's reply to the plugin's
/// next Register call. Restarts are spread over the phases of `interval`.
pub fn restart_to_registered(
    session: &mut Session,
    restarts: usize,
    interval: Duration,
) -> Vec<Duration> {
    let plugin = session.plugin;
    (0..restarts)
        .map(|round| {
            std::thread::sleep(phase_delay(round, interval));
            session.kubelet.restart();
            let served = session.kubelet.served_at();
            let registered = wait_registered(&session.kubelet, plugin, served);
            session.kubelet.next_list(&plugin.resource);
            registered.at - served
        })
        .collect()
}

/// Time from a change of the device node to the device list that reports it.
pub struct HealthSamples {
    /// From removing the node to receiving a list with every device `Unhealthy`.
    pub removed: Vec<Duration>,
    /// From recreating the node to receiving a list with every device `Healthy`.
    pub recreated: Vec<Duration>,
}

/// Removes and recreates the device node `rounds` times, with each change at a different phase
/// of `interval`, and measures how long each takes to reach the ListAndWatch stream.
pub fn device_health(session: &Session, rounds: usize, interval: Duration) -> HealthSamples {
    let device_path = &session.sandbox.device_path;
    let mut samples = HealthSamples {
        removed: Vec::with_capacity(rounds),
        recreated: Vec::with_capacity(rounds),
    };
    for round in 0..rounds {
        std::thread::sleep(phase_delay(2 * round, interval));
        let removed = Instant::now();
        remove_node(device_path);
        wait_health(session, "Unhealthy");
        samples.removed.push(removed.elapsed());

        std::thread::sleep(phase_delay(2 * round + 1, interval));
        let recreated = Instant::now();
        make_tun_node(device_path);
        wait_health(session, "Healthy");
        samples.recreated.push(recreated.elapsed());
    }
    samples
}

/// Waits for a device list in which every device has `health`, skipping other lists.
fn wait_health(session: &Session, health: &str) {
    loop {
        let list = session.kubelet.next_list(&session.plugin.resource);
        let all = !list.devices.is_empty() && list.devices.iter().all(|d| d.health == health);
        if all {
            return;
        }
    }
}
