//! The tun-manager binary as a child process: started with the sandbox's paths, its output
//! captured to a file that is printed when the test fails, and killed on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Sandbox, POLL, TIMEOUT};

/// Numbers the output files of the daemons a test process starts.
static NEXT_LOG: AtomicUsize = AtomicUsize::new(0);

/// Log filter for the daemon: its own debug lines, and info lines from other crates.
const RUST_LOG: &str = "info,tun_manager=debug";

/// Returns the daemon binary: `TUN_MANAGER_BIN` if set, else the one cargo built for the tests.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TUN_MANAGER_BIN") {
        return PathBuf::from(path);
    }
    // Cargo sets this for integration tests only, so other users must set TUN_MANAGER_BIN.
    match option_env!("CARGO_BIN_EXE_tun-manager") {
        Some(built) => PathBuf::from(built),
        None => panic!("set TUN_MANAGER_BIN to the tun-manager binary to run"),
    }
}

/// A running (or exited) tun-manager process.
pub struct Daemon {
    child: Child,
    log_path: PathBuf,
    status: Option<ExitStatus>,
}

impl Daemon {
    /// Starts the daemon on the sandbox's plugin directory, device node and sysfs tree, with
    /// `flags` appended.
    pub fn start(sandbox: &Sandbox, flags: &[&str]) -> Daemon {
        let mut args = sandbox.daemon_flags();
        args.extend(flags.iter().map(|flag| flag.to_string()));
        Daemon::start_with_args(sandbox, &args)
    }

    /// Starts the daemon with exactly `args`, in the sandbox root so that a relative path
    /// stays inside the sandbox even if the daemon wrongly accepts it.
    pub fn start_with_args(sandbox: &Sandbox, args: &[String]) -> Daemon {
        let mut command = Command::new(binary());
        command.args(args).env("RUST_LOG", RUST_LOG);
        Daemon::spawn(sandbox, command)
    }

    /// Spawns `command`, which may run any device plugin, in the sandbox root with its stdout
    /// and stderr written to a log file in the sandbox.
    pub fn spawn(sandbox: &Sandbox, mut command: Command) -> Daemon {
        let number = NEXT_LOG.fetch_add(1, Ordering::Relaxed);
        let log_path = sandbox.root().join(format!("daemon-{number}.log"));
        let log = File::create(&log_path)
            .unwrap_or_else(|error| panic!("failed to create {}: {error}", log_path.display()));
        let stdout = log
            .try_clone()
            .expect("duplicate the daemon log file handle");
        let child = command
            .current_dir(sandbox.root())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("failed to start {command:?}: {error}"));
        Daemon {
            child,
            log_path,
            status: None,
        }
    }

    /// Returns the process ID.
    pub fn pid(&self) -> Pid {
        let pid = i32::try_from(self.child.id()).expect("process IDs fit in i32");
        Pid::from_raw(pid)
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal)
            .unwrap_or_else(|errno| panic!("failed to send {signal} to the daemon: {errno}"));
    }

    /// Waits for the daemon to exit and returns its status, failing the test after `TIMEOUT`.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.try_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {TIMEOUT:?} waiting for the daemon (pid {}) to exit",
                self.child.id()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Fails the test if the daemon has exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.try_status() {
            panic!("expected the daemon to keep running, but it exited with {status}");
        }
    }

    /// Returns true once the daemon has exited.
    pub fn has_exited(&mut self) -> bool {
        self.try_status().is_some()
    }

    /// Returns everything the daemon wrote to stdout and stderr so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_else(|error| {
            format!("(failed to read {}: {error})", self.log_path.display())
        })
    }

    fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self
                .child
                .try_wait()
                .expect("check whether the daemon has exited");
        }
        self.status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // No expect here: a second panic while the test unwinds would abort the test process.
        let exited = self.status.is_some() || matches!(self.child.try_wait(), Ok(Some(_)));
        if !exited {
            // The process may exit between the check and the kill, so both errors are moot.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- output of tun-manager (pid {}) ---\n{}--- end of output ---",
                self.child.id(),
                self.output()
            );
        }
    }
}
