//! Resource use of a running process, read from `/proc/<pid>`: threads, open file descriptors,
//! resident memory and CPU time. Linux only, like the daemon.

use std::time::Instant;

use nix::unistd::Pid;

use super::{POLL, TIMEOUT};

/// Name gRPC gives the threads of its event engine executor. gRPC 1.56 (grpcio-sys 0.13,
/// `original_thread_pool.cc`) starts one more of them when work is queued while none is idle,
/// at most one a second, and ends each one beyond its reserve after 30 s without work. Their
/// number therefore moves under load and comes back only half a minute later.
pub const GRPC_POOL_THREAD: &str = "event_engine";

/// Number of consecutive equal readings that `ProcessCounts::steady` takes as steady.
const STEADY_READINGS: usize = 10;

/// Thread and open file descriptor counts of one process at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessCounts {
    /// The `Threads` line of `/proc/<pid>/status`.
    pub threads: u64,
    /// Threads named `GRPC_POOL_THREAD`, read from `/proc/<pid>/task` just after `threads`.
    pub grpc_pool_threads: u64,
    /// Entries in `/proc/<pid>/fd`.
    pub open_fds: usize,
}

impl ProcessCounts {
    /// Reads the counts of `pid`.
    pub fn of(pid: Pid) -> ProcessCounts {
        ProcessCounts {
            threads: status_field(pid, "Threads"),
            grpc_pool_threads: threads_named(pid, GRPC_POOL_THREAD),
            open_fds: open_fds(pid),
        }
    }

    /// Returns the threads outside gRPC's event engine pool: the daemon's own threads and
    /// gRPC's fixed ones. Unlike `threads`, this count returns to its value as soon as the
    /// work that raised it has ended.
    pub fn fixed_threads(&self) -> u64 {
        self.threads.saturating_sub(self.grpc_pool_threads)
    }

    /// Returns true when `fixed_threads` and `open_fds` are equal in both readings.
    pub fn matches(&self, other: &ProcessCounts) -> bool {
        self.fixed_threads() == other.fixed_threads() && self.open_fds == other.open_fds
    }

    /// Reads the counts of `pid` until `STEADY_READINGS` readings in a row match, and returns
    /// the last one. A connection that is closing, such as that of a finished Register call,
    /// keeps its file descriptor open for a moment, and this waits for it to go.
    pub fn steady(pid: Pid) -> ProcessCounts {
        let deadline = Instant::now() + TIMEOUT;
        let mut last = ProcessCounts::of(pid);
        let mut equal = 1;
        while equal < STEADY_READINGS {
            assert!(
                Instant::now() < deadline,
                "timed out after {TIMEOUT:?} waiting for the thread and file descriptor counts \
                 of process {pid} to hold still; last reading {last:?}"
            );
            std::thread::sleep(POLL);
            let counts = ProcessCounts::of(pid);
            equal = if counts.matches(&last) { equal + 1 } else { 1 };
            last = counts;
        }
        last
    }

    /// Reads the counts of `pid` until they match `expected` or `TIMEOUT` passes, and returns
    /// the last reading. Threads that serve ended streams exit asynchronously, so the counts
    /// may take a moment to settle after the work that raised them.
    pub fn settle(pid: Pid, expected: ProcessCounts) -> ProcessCounts {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let counts = ProcessCounts::of(pid);
            if counts.matches(&expected) || Instant::now() >= deadline {
                return counts;
            }
            std::thread::sleep(POLL);
        }
    }
}

/// Returns the number of threads of `pid` whose name is `name`. Threads that exit while they
/// are being listed are not counted.
pub fn threads_named(pid: Pid, name: &str) -> u64 {
    let dir = format!("/proc/{pid}/task");
    let tasks =
        std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("failed to read {dir}: {error}"));
    let mut count = 0;
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == name {
            count += 1;
        }
    }
    count
}

/// Returns the number of open file descriptors of `pid`.
pub fn open_fds(pid: Pid) -> usize {
    let dir = format!("/proc/{pid}/fd");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("failed to read {dir}: {error}"))
        .count()
}

/// Returns the resident memory of `pid` in KiB, the `VmRSS` line of `/proc/<pid>/status`.
pub fn resident_kib(pid: Pid) -> u64 {
    status_field(pid, "VmRSS")
}

/// Returns the CPU time `pid` has used in user and kernel mode, in clock ticks: the `utime`
/// and `stime` fields of `/proc/<pid>/stat`, which include the threads that have exited.
pub fn cpu_ticks(pid: Pid) -> u64 {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {path}: {error}"));
    // The command name in field 2 may contain spaces, so count fields after its closing
    // parenthesis: field 3 (state) comes first, utime and stime are fields 14 and 15.
    let after_name = &stat[stat.rfind(')').expect("a command name in /proc/<pid>/stat") + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> u64 {
        fields[number - 3]
            .parse()
            .unwrap_or_else(|error| panic!("invalid field {number} in {path}: {error}"))
    };
    field(14) + field(15)
}

/// Returns the time the live threads of `pid` have spent on a CPU, in nanoseconds: the sum of
/// the first field of `/proc/<pid>/task/<tid>/schedstat`. It is exact where `cpu_ticks` counts
/// in clock ticks, but it leaves out threads that have exited.
pub fn thread_runtime_ns(pid: Pid) -> u64 {
    let dir = format!("/proc/{pid}/task");
    let tasks =
        std::fs::read_dir(&dir).unwrap_or_else(|error| panic!("failed to read {dir}: {error}"));
    let mut total = 0;
    for task in tasks.flatten() {
        // A thread that exits while the tasks are listed has no schedstat left to read.
        let schedstat = std::fs::read_to_string(task.path().join("schedstat")).unwrap_or_default();
        let runtime = schedstat.split_whitespace().next().unwrap_or("0");
        total += runtime.parse::<u64>().unwrap_or(0);
    }
    total
}

/// Returns the first number on the line `<name>:` of `/proc/<pid>/status`.
fn status_field(pid: Pid, name: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("failed to read {path}: {error}"));
    let value = status
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {name} line in {path}"));
    let number = value.split_whitespace().next().unwrap_or_default();
    number
        .parse()
        .unwrap_or_else(|error| panic!("invalid {name} value {value:?} in {path}: {error}"))
}
