//! Allocate load: concurrent callers on one gRPC channel to the plugin socket, as the kubelet
//! keeps one connection per plugin, and what the load costs the plugin process.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use grpcio::CallOption;
use hdrhistogram::Histogram;
use nix::unistd::Pid;

use crate::plugin::Session;
use crate::stats::{new_histogram, record};
use crate::support::procfs::{cpu_ticks, resident_kib, thread_runtime_ns};
use crate::support::{allocate_request, TIMEOUT};

/// Outcome of one run of Allocate calls.
pub struct LoadRun {
    /// Number of concurrent callers.
    pub callers: usize,
    /// Round-trip latency of every call, in nanoseconds.
    pub latencies: Histogram<u64>,
    /// Time from the first call to the last reply.
    pub elapsed: Duration,
    /// CPU time the plugin process used during the run, in clock ticks.
    pub plugin_cpu_ticks: u64,
    /// CPU time this process, the load generator and the stand-in kubelet, used during the
    /// run, in clock ticks.
    pub client_cpu_ticks: u64,
}

impl LoadRun {
    /// Returns the completed calls per second of wall-clock time.
    pub fn calls_per_second(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Makes `calls` Allocate calls for the plugin's first device from `callers` threads at once,
/// each call starting when the same thread's previous call returned. Panics if a call fails.
pub fn allocate(session: &Session, callers: usize, calls: usize) -> LoadRun {
    let client = session.kubelet.plugin_client(&session.plugin.socket);
    let device = session.first_device();
    let request = allocate_request(&[&[device.as_str()]]);
    let options = CallOption::default().timeout(TIMEOUT);
    let start = Barrier::new(callers + 1);
    let pid = session.daemon.pid();
    let own_pid = Pid::this();

    let (latencies, elapsed, plugin_cpu_ticks, client_cpu_ticks) = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..callers)
            .map(|caller| {
                let share = calls / callers + usize::from(caller < calls % callers);
                let (client, request, options, start) = (&client, &request, &options, &start);
                scope.spawn(move || {
                    let mut latencies = new_histogram();
                    start.wait();
                    for _ in 0..share {
                        let sent = Instant::now();
                        if let Err(error) = client.allocate_opt(request, options.clone()) {
                            panic!("Allocate failed under load from {callers} callers: {error}");
                        }
                        record(&mut latencies, sent.elapsed());
                    }
                    latencies
                })
            })
            .collect();
        let cpu_before = (cpu_ticks(pid), cpu_ticks(own_pid));
        start.wait();
        let started = Instant::now();
        let mut all = new_histogram();
        for thread in threads {
            let latencies = thread.join().expect("an Allocate caller panicked");
            all.add(latencies).expect("histograms with the same bounds");
        }
        let elapsed = started.elapsed();
        let plugin_cpu_ticks = cpu_ticks(pid) - cpu_before.0;
        let client_cpu_ticks = cpu_ticks(own_pid) - cpu_before.1;
        (all, elapsed, plugin_cpu_ticks, client_cpu_ticks)
    });
    LoadRun {
        callers,
        latencies,
        elapsed,
        plugin_cpu_ticks,
        client_cpu_ticks,
    }
}

/// Resident memory of the plugin after each part of a long Allocate run.
pub struct MemoryRun {
    /// Calls made so far and the resident memory in KiB after them, starting with 0 calls.
    pub checkpoints: Vec<(usize, u64)>,
}

/// Makes `calls` Allocate calls from `callers` threads in `parts` equal parts, and reads the
/// plugin's resident memory before the first part and after each part.
pub fn memory_under_allocate(
    session: &Session,
    callers: usize,
    calls: usize,
    parts: usize,
) -> MemoryRun {
    let pid = session.daemon.pid();
    let mut checkpoints = vec![(0, resident_kib(pid))];
    for part in 1..=parts {
        allocate(session, callers, calls / parts);
        checkpoints.push((part * (calls / parts), resident_kib(pid)));
    }
    MemoryRun { checkpoints }
}

/// CPU time the plugin used over a quiet period.
pub struct IdleRun {
    /// Length of the period.
    pub elapsed: Duration,
    /// CPU time used, in clock ticks, from `/proc/<pid>/stat`.
    pub ticks: u64,
    /// Time the plugin's threads spent on a CPU, in nanoseconds, from their schedstat.
    pub runtime_ns: u64,
}

/// Leaves the plugin alone for `duration`, with its ListAndWatch stream open, and returns the
/// CPU time it used meanwhile.
pub fn idle(session: &Session, duration: Duration) -> IdleRun {
    let pid = session.daemon.pid();
    let (ticks_before, runtime_before) = (cpu_ticks(pid), thread_runtime_ns(pid));
    let started = Instant::now();
    std::thread::sleep(duration);
    IdleRun {
        elapsed: started.elapsed(),
        ticks: cpu_ticks(pid) - ticks_before,
        runtime_ns: thread_runtime_ns(pid).saturating_sub(runtime_before),
    }
}
