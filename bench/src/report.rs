//! The benchmark table, the machine it was measured on, and BENCHMARKS.md.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::load::{IdleRun, LoadRun, MemoryRun};
use crate::stats::{format_latency, quantile, Summary};
use crate::support::procfs::ProcessCounts;

/// Line before the generated part of BENCHMARKS.md. `write_section` keeps the text outside the
/// markers.
const BEGIN_MARKER: &str = "<!-- scripts/bench output begins; edit outside these markers -->";
/// Line after the generated part of BENCHMARKS.md.
const END_MARKER: &str = "<!-- scripts/bench output ends -->";
/// Placeholder for a column that does not apply to a row.
const NONE: &str = "–";

/// One row of the table. Columns that do not apply hold `NONE`.
pub struct Row {
    measurement: String,
    samples: String,
    p50: String,
    p99: String,
    p999: String,
    max: String,
    other: String,
}

impl Row {
    /// Builds a latency row with the median and maximum, and the p99 too when `with_p99` is set.
    pub fn latency(measurement: String, summary: &Summary, with_p99: bool) -> Row {
        Row {
            measurement,
            samples: summary.count.to_string(),
            p50: format_latency(summary.median),
            p99: if with_p99 {
                format_latency(summary.p99)
            } else {
                NONE.into()
            },
            p999: NONE.into(),
            max: format_latency(summary.max),
            other: String::new(),
        }
    }

    /// Builds an Allocate row: latency percentiles, throughput and CPU time per call.
    pub fn allocate(run: &LoadRun, ticks_per_second: u64) -> Row {
        let calls = run.latencies.len();
        let per_call = |ticks: u64| {
            let seconds = ticks as f64 / ticks_per_second as f64;
            format_latency(Duration::from_secs_f64(seconds / calls as f64))
        };
        let callers = match run.callers {
            1 => "1 caller".to_owned(),
            callers => format!("{callers} concurrent callers"),
        };
        Row {
            measurement: format!("Allocate round trip, {callers}"),
            samples: calls.to_string(),
            p50: format_latency(quantile(&run.latencies, 0.5)),
            p99: format_latency(quantile(&run.latencies, 0.99)),
            p999: format_latency(quantile(&run.latencies, 0.999)),
            max: format_latency(Duration::from_nanos(run.latencies.max())),
            other: format!(
                "{:.0} calls/s; CPU per call: plugin {}, load generator {}",
                run.calls_per_second(),
                per_call(run.plugin_cpu_ticks),
                per_call(run.client_cpu_ticks)
            ),
        }
    }

    /// Builds a row with a text result only.
    pub fn note(measurement: &str, samples: String, other: String) -> Row {
        Row {
            measurement: measurement.into(),
            samples,
            p50: NONE.into(),
            p99: NONE.into(),
            p999: NONE.into(),
            max: NONE.into(),
            other,
        }
    }

    /// Builds the row of resident memory after start and at each checkpoint of `run`.
    pub fn memory(after_start_kib: u64, run: &MemoryRun) -> Row {
        let checkpoints: Vec<String> = run
            .checkpoints
            .iter()
            .map(|(calls, kib)| format!("{kib} KiB after {calls}"))
            .collect();
        let calls = run.checkpoints.last().map_or(0, |(calls, _)| *calls);
        Row::note(
            "resident memory (VmRSS)",
            format!("{calls} calls"),
            format!(
                "{after_start_kib} KiB after start; {}",
                checkpoints.join(", ")
            ),
        )
    }

    /// Builds the rows of threads and open file descriptors before and after the load.
    pub fn counts(before: &ProcessCounts, after: &ProcessCounts) -> [Row; 2] {
        let threads = |counts: &ProcessCounts| {
            format!(
                "{} ({} in gRPC's pool)",
                counts.threads, counts.grpc_pool_threads
            )
        };
        [
            Row::note(
                "threads",
                NONE.into(),
                format!(
                    "{} after start, {} after load",
                    threads(before),
                    threads(after)
                ),
            ),
            Row::note(
                "open file descriptors",
                NONE.into(),
                format!(
                    "{} after start, {} after load",
                    before.open_fds, after.open_fds
                ),
            ),
        ]
    }

    /// Builds the row of CPU time used while idle at `label`, as a share of one core.
    pub fn idle(label: &str, run: &IdleRun, ticks_per_second: u64) -> Row {
        let seconds = run.elapsed.as_secs_f64();
        let from_ticks = run.ticks as f64 / ticks_per_second as f64;
        let from_runtime = run.runtime_ns as f64 / 1e9;
        Row::note(
            &format!("CPU while idle, {label}"),
            format!("{seconds:.0} s"),
            format!(
                "{:.3} % of one core by utime+stime ({} of {} clock ticks); {:.3} % by the \
                 threads' schedstat",
                100.0 * from_ticks / seconds,
                run.ticks,
                (seconds * ticks_per_second as f64).round(),
                100.0 * from_runtime / seconds
            ),
        )
    }
}

/// Renders the report: the `measured` and `plugin` lines, then the table of `rows`.
pub fn section(measured: &str, plugin: &str, rows: &[Row]) -> String {
    format!("{measured}\n\n{plugin}\n\n{}", table(rows))
}

/// Renders `rows` as a Markdown table.
fn table(rows: &[Row]) -> String {
    let mut text = String::from(
        "| measurement | samples | p50 | p99 | p99.9 | max | other |\n\
         |---|---:|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.measurement, row.samples, row.p50, row.p99, row.p999, row.max, row.other
        );
    }
    text
}

/// The machine the figures were taken on, from /proc.
pub struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
    memory_kib: u64,
}

impl Machine {
    /// Reads the CPU count, CPU model, kernel release and memory size.
    pub fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown CPU model".into(), |(_, name)| {
                name.trim().to_owned()
            });
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib = meminfo
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|value| value.split_whitespace().next()?.parse().ok())
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, |cpus| cpus.get()),
            model,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map_or("unknown".into(), |release| release.trim().to_owned()),
            memory_kib,
        }
    }

    /// Describes the machine in one line, as `uname -r` and `nproc` would.
    pub fn describe(&self) -> String {
        format!(
            "{} CPUs ({}), {:.0} GiB memory, Linux {}",
            self.cpus,
            self.model,
            self.memory_kib as f64 / (1024.0 * 1024.0),
            self.kernel
        )
    }
}

/// Replaces the generated part of the file at `path` with `section`, or creates the file with
/// a title and the section when it does not exist.
pub fn write_section(path: &Path, section: &str) -> std::io::Result<()> {
    let generated = format!("{BEGIN_MARKER}\n{section}{END_MARKER}\n");
    let text = match std::fs::read_to_string(path) {
        Ok(text) => match (text.find(BEGIN_MARKER), text.find(END_MARKER)) {
            (Some(begin), Some(end)) if begin < end => {
                let after = &text[end + END_MARKER.len()..];
                let after = after.strip_prefix('\n').unwrap_or(after);
                format!("{}{generated}{after}", &text[..begin])
            }
            _ => format!("{text}\n{generated}"),
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            format!("# Benchmarks\n\n{generated}")
        }
        Err(error) => return Err(error),
    };
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn section_replaced_between_markers() {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let path = dir.path().join("BENCHMARKS.md");
        write_section(&path, "first\n").expect("create the file");
        let created = std::fs::read_to_string(&path).expect("read the file");
        std::fs::write(&path, format!("{created}\n## Notes\nkept\n")).expect("add notes");

        write_section(&path, "second\n").expect("update the file");
        let updated = std::fs::read_to_string(&path).expect("read the file");
        assert!(updated.contains("second\n"), "{updated}");
        assert!(!updated.contains("first\n"), "{updated}");
        assert!(updated.ends_with("## Notes\nkept\n"), "{updated}");
        assert_eq!(updated.matches(BEGIN_MARKER).count(), 1, "{updated}");
    }
}
