//! The order of the measurements, how many rounds each takes, and the rows they produce.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::lifecycle;
use crate::load;
use crate::plugin::{Plugin, Session};
use crate::report::Row;
use crate::stats::summarize;
use crate::support::procfs::{resident_kib, ProcessCounts};

/// How many rounds each measurement takes.
pub struct Rounds {
    /// Plugin starts.
    pub starts: usize,
    /// Kubelet restarts at each poll interval.
    pub restarts: usize,
    /// Removals and recreations of the device node.
    pub health: usize,
    /// Allocate calls before the latency runs, whose latencies are dropped.
    pub warmup_calls: usize,
    /// Allocate calls of each latency run.
    pub latency_calls: usize,
    /// Allocate calls of the memory run.
    pub memory_calls: usize,
    /// Parts of the memory run, with a resident memory reading after each.
    pub memory_parts: usize,
    /// Idle time at the default poll interval.
    pub idle: Duration,
    /// Idle time at each other poll interval.
    pub other_idle: Duration,
}

/// Rounds of a full run, about 3 minutes on 2 cores.
pub const FULL: Rounds = Rounds {
    starts: 20,
    restarts: 100,
    health: 20,
    warmup_calls: 5_000,
    latency_calls: 50_000,
    memory_calls: 100_000,
    memory_parts: 4,
    idle: Duration::from_secs(60),
    other_idle: Duration::from_secs(20),
};

/// Rounds of a run that only checks that the harness works, about 10 s.
pub const QUICK: Rounds = Rounds {
    starts: 3,
    restarts: 5,
    health: 3,
    warmup_calls: 200,
    latency_calls: 1_000,
    memory_calls: 2_000,
    memory_parts: 2,
    idle: Duration::from_secs(2),
    other_idle: Duration::from_secs(1),
};

/// Concurrent Allocate callers of the latency runs.
const CALLERS: [usize; 3] = [1, 8, 32];
/// Concurrent Allocate callers of the warm-up and the memory run.
const LOAD_CALLERS: usize = 32;

/// Settings shared by every measurement.
pub struct Settings {
    /// The poll interval to pass to the plugin, or None when it has no poll flag.
    pub default_poll_ms: Option<u64>,
    /// The plugin's poll interval, over whose phases events are spread.
    pub default_interval: Duration,
    /// Intervals to measure re-registration at, in ascending order, where None means the
    /// plugin's own interval.
    pub restart_poll_ms: Vec<Option<u64>>,
    /// Clock ticks per second of `/proc/<pid>/stat` CPU times.
    pub ticks_per_second: u64,
}

impl Settings {
    /// Describes the poll interval of a plugin started with `poll_ms`.
    pub fn poll_label(&self, poll_ms: Option<u64>) -> String {
        match poll_ms {
            None => "the plugin's own poll interval".into(),
            Some(ms) if Some(ms) == self.default_poll_ms => format!("poll {ms} ms, the default"),
            Some(ms) => format!("poll {ms} ms"),
        }
    }
}

/// Runs every measurement and returns the table rows, printing progress to stderr.
pub fn measure(plugin: &Plugin, settings: &Settings, rounds: &Rounds) -> Vec<Row> {
    let mut rows = vec![starts(plugin, settings, rounds)];
    let mut idle_rows = Vec::new();
    for &poll_ms in &settings.restart_poll_ms {
        let (restart_row, idle_row) = restarts(plugin, settings, rounds, poll_ms);
        rows.push(restart_row);
        idle_rows.extend(idle_row);
    }
    rows.extend(steady_state(plugin, settings, rounds));
    rows.extend(idle_rows);
    progress("done");
    rows
}

fn starts(plugin: &Plugin, settings: &Settings, rounds: &Rounds) -> Row {
    progress(&format!("{} starts", rounds.starts));
    let starts = lifecycle::start_to_registered(plugin, rounds.starts, settings.default_poll_ms);
    Row::latency("start to registered".into(), &summarize(&starts), false)
}

/// Measures re-registration at `poll_ms`, and idle CPU too unless `poll_ms` is the default,
/// which `steady_state` measures for longer.
fn restarts(
    plugin: &Plugin,
    settings: &Settings,
    rounds: &Rounds,
    poll_ms: Option<u64>,
) -> (Row, Option<Row>) {
    let label = settings.poll_label(poll_ms);
    progress(&format!("{} kubelet restarts at {label}", rounds.restarts));
    let interval = poll_ms.map_or(settings.default_interval, Duration::from_millis);
    let mut session = Session::start(plugin, poll_ms);
    let restarts = lifecycle::restart_to_registered(&mut session, rounds.restarts, interval);
    let restart_row = Row::latency(
        format!("kubelet restart to registered again, {label}"),
        &summarize(&restarts),
        true,
    );
    let idle_row = (poll_ms != settings.default_poll_ms).then(|| {
        progress(&format!(
            "{} s idle at {label}",
            rounds.other_idle.as_secs()
        ));
        let idle = load::idle(&session, rounds.other_idle);
        Row::idle(&label, &idle, settings.ticks_per_second)
    });
    session.stop();
    (restart_row, idle_row)
}

/// Measures one plugin instance at the default poll interval: device health, Allocate load,
/// memory, threads and file descriptors, then idle CPU.
fn steady_state(plugin: &Plugin, settings: &Settings, rounds: &Rounds) -> Vec<Row> {
    let mut rows = Vec::new();
    let session = Session::start(plugin, settings.default_poll_ms);
    let pid = session.daemon.pid();
    let after_start = ProcessCounts::steady(pid);
    let resident_after_start = resident_kib(pid);

    if plugin.has_device_flag() {
        progress(&format!("{} device node removals", rounds.health));
        let health = lifecycle::device_health(&session, rounds.health, settings.default_interval);
        rows.push(Row::latency(
            "device node removed to Unhealthy on the stream".into(),
            &summarize(&health.removed),
            false,
        ));
        rows.push(Row::latency(
            "device node recreated to Healthy on the stream".into(),
            &summarize(&health.recreated),
            false,
        ));
    }

    progress("Allocate load");
    load::allocate(&session, LOAD_CALLERS, rounds.warmup_calls);
    for callers in CALLERS {
        let run = load::allocate(&session, callers, rounds.latency_calls);
        rows.push(Row::allocate(&run, settings.ticks_per_second));
    }
    let memory = load::memory_under_allocate(
        &session,
        LOAD_CALLERS,
        rounds.memory_calls,
        rounds.memory_parts,
    );
    rows.push(Row::memory(resident_after_start, &memory));
    let after_load = ProcessCounts::settle(pid, after_start);
    rows.extend(Row::counts(&after_start, &after_load));

    progress(&format!("{} s idle", rounds.idle.as_secs()));
    let idle = load::idle(&session, rounds.idle);
    let label = settings.poll_label(settings.default_poll_ms);
    rows.push(Row::idle(&label, &idle, settings.ticks_per_second));
    session.stop();
    rows
}

/// Prints the step about to run, with the time since the first step.
fn progress(step: &str) {
    static STARTED: OnceLock<Instant> = OnceLock::new();
    let elapsed = STARTED.get_or_init(Instant::now).elapsed();
    eprintln!("bench: [{:6.1} s] {step}", elapsed.as_secs_f64());
}
