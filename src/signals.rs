//! Signal handling as events for the supervisor.
//!
//! The daemon runs as PID 1 in its container, where the kernel ignores every signal that has
//! no handler installed. signal-hook installs real handlers, so SIGTERM from the runtime works.

use std::io;
use std::thread::{self, JoinHandle};

use crossbeam_channel::Sender;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};

/// A signal the supervisor acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalEvent {
    /// SIGTERM or SIGINT: stop serving, remove the sockets, exit 0.
    Stop(&'static str),
    /// SIGHUP: register every resource again.
    Reregister,
}

/// The running signal thread; `stop` ends and joins it.
pub struct SignalThread {
    handle: Handle,
    thread: JoinHandle<()>,
}

impl SignalThread {
    /// Installs handlers for SIGTERM, SIGINT and SIGHUP and forwards them to `events`.
    pub fn start(events: Sender<SignalEvent>) -> io::Result<SignalThread> {
        let mut signals = Signals::new([SIGTERM, SIGINT, SIGHUP])?;
        let handle = signals.handle();
        let thread = thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let event = match signal {
                        SIGHUP => SignalEvent::Reregister,
                        SIGINT => SignalEvent::Stop("SIGINT"),
                        _ => SignalEvent::Stop("SIGTERM"),
                    };
                    if events.send(event).is_err() {
                        break;
                    }
                }
            })?;
        Ok(SignalThread { handle, thread })
    }

    /// Stops listening for signals and joins the thread.
    pub fn stop(self) {
        self.handle.close();
        if self.thread.join().is_err() {
            log::error!("the signal thread panicked");
        }
    }
}
