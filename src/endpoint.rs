//! One advertised resource: its socket, its gRPC server and its registration state.
//!
//! The supervisor owns every `Endpoint` and calls into it from one thread, so nothing here is
//! shared except the fan-out and the registration epoch, which the service reads.

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use grpcio::Environment;

use crate::allocation::Allocator;
use crate::fanout::{DeviceList, Fanout};
use crate::kubelet::{KubeletClient, SocketIdentity};
use crate::plugin::{DevicePluginService, ServiceContext, StreamEnded};
use crate::resource::ResourceName;
use crate::server::{PluginServer, ServeError};

/// First delay after a failed Register call.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Maximum delay between Register attempts or between attempts to serve the socket.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Wait between the end of a ListAndWatch stream and the next Register to the same kubelet.
///
/// Kubelet v1.37.2 rejects a Register for a socket it still counts as connected, and in doing so
/// drops its record of that connection, so it misses the connection's end and rejects every
/// later Register until it restarts. The kubelet removes a connection within milliseconds of
/// the stream ending, so the plugin waits this long before registering the same socket again.
// NOTE: 300 ms is an estimate with a wide margin over what the kubelet needs on an idle node,
// because the plugin gets no signal when the kubelet has processed the disconnect.
pub const SETTLE_DELAY: Duration = Duration::from_millis(300);
/// How often an idle ListAndWatch stream checks whether the kubelet closed it. A restarting
/// kubelet is noticed through its socket on the next poll tick, so this only bounds how long a
/// stream the kubelet ended on its own goes unnoticed, at one wakeup a second.
pub const STREAM_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Part of the kubelet's error when it still counts the plugin's socket as connected.
const ALREADY_CONNECTED: &str = "device plugin already connected";

/// Cause of a new registration, logged by name when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// The daemon just started.
    Startup,
    /// kubelet.sock appeared where there was none.
    KubeletSocketCreated,
    /// kubelet.sock was replaced by a new file: the kubelet restarted.
    KubeletSocketReplaced,
    /// Our plugin socket was deleted.
    PluginSocketDeleted,
    /// Our plugin socket was replaced by another file.
    PluginSocketReplaced,
    /// The kubelet ended our ListAndWatch stream while we were registered.
    StreamEnded,
    /// An operator sent SIGHUP.
    Sighup,
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Startup => "startup",
            Self::KubeletSocketCreated => "kubelet socket created",
            Self::KubeletSocketReplaced => "kubelet socket replaced",
            Self::PluginSocketDeleted => "plugin socket deleted",
            Self::PluginSocketReplaced => "plugin socket replaced",
            Self::StreamEnded => "ListAndWatch stream ended",
            Self::Sighup => "SIGHUP",
        })
    }
}

/// Outcome of a Register call, sent back to the supervisor from a gRPC thread.
#[derive(Debug)]
pub struct Registered {
    /// Index of the endpoint that registered.
    pub endpoint: usize,
    /// Epoch of the attempt.
    pub epoch: u64,
    /// The error message when the kubelet did not accept the registration.
    pub result: Result<(), String>,
}

/// Channels and settings every endpoint shares.
pub struct Shared {
    /// gRPC environment for servers and the kubelet client.
    pub env: Arc<Environment>,
    /// The kubelet's Registration client.
    pub kubelet: KubeletClient,
    /// Channel for ended-stream reports from the services.
    pub stream_ended: Sender<StreamEnded>,
    /// Channel for Register outcomes.
    pub registered: Sender<Registered>,
}

/// Per-resource state.
pub struct Endpoint {
    index: usize,
    resource: ResourceName,
    socket_name: String,
    socket_path: PathBuf,
    allocator: Allocator,
    fanout: Arc<Fanout>,
    epoch: Arc<AtomicU64>,
    server: Option<PluginServer>,
    registration: Registration,
    serve_retry: Retry,
    settle: Option<Settle>,
}

/// A pause before registering with the kubelet instance that saw our last stream end.
#[derive(Debug)]
struct Settle {
    until: Instant,
    kubelet: Option<SocketIdentity>,
}

#[derive(Debug, Default)]
struct Registration {
    /// A trigger asked for a Register call that has not started yet.
    wanted: bool,
    /// Epoch of the call in flight.
    in_flight: Option<u64>,
    /// The kubelet accepted the last call and nothing has invalidated it since.
    registered: bool,
    retry: Retry,
}

/// Exponential backoff with a count of consecutive failures, for log deduplication.
#[derive(Debug)]
struct Retry {
    delay: Duration,
    not_before: Instant,
    failures: u32,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry {
            delay: INITIAL_BACKOFF,
            not_before: Instant::now(),
            failures: 0,
        }
    }
}

impl Retry {
    fn due(&self, now: Instant) -> bool {
        now >= self.not_before
    }

    /// Records a failure and returns whether it is the first of a run.
    fn fail(&mut self, now: Instant) -> bool {
        self.not_before = now + self.delay;
        self.delay = (self.delay * 2).min(MAX_BACKOFF);
        self.failures += 1;
        self.failures == 1
    }

    /// Records a success and returns how many failures preceded it.
    fn succeed(&mut self) -> u32 {
        std::mem::take(self).failures
    }
}

impl Endpoint {
    /// Creates the endpoint for `resource`, served at `socket_path` with `allocator`.
    pub fn new(
        index: usize,
        resource: ResourceName,
        socket_path: PathBuf,
        allocator: Allocator,
        initial: DeviceList,
    ) -> Endpoint {
        Endpoint {
            index,
            socket_name: resource.socket_name(),
            resource,
            socket_path,
            allocator,
            fanout: Arc::new(Fanout::new(initial)),
            epoch: Arc::new(AtomicU64::new(0)),
            server: None,
            registration: Registration::default(),
            serve_retry: Retry::default(),
            settle: None,
        }
    }

    /// Sends `list` to every ListAndWatch stream of this resource.
    pub fn publish(&self, list: DeviceList) {
        self.fanout.publish(list);
    }

    /// Starts the gRPC server on the plugin socket.
    pub fn serve(&mut self, shared: &Shared) -> Result<(), ServeError> {
        let (service, stop_streams) = DevicePluginService::new(ServiceContext {
            endpoint: self.index,
            resource: self.resource.clone(),
            allocator: self.allocator.clone(),
            fanout: Arc::clone(&self.fanout),
            epoch: Arc::clone(&self.epoch),
            stream_ended: shared.stream_ended.clone(),
            stream_check_interval: STREAM_CHECK_INTERVAL,
        });
        let server = PluginServer::start(&shared.env, &self.socket_path, service, stop_streams)?;
        log::info!(
            "serving {} on {}",
            self.resource,
            self.socket_path.display()
        );
        self.server = Some(server);
        Ok(())
    }

    /// Stops the gRPC server, if any, and removes its socket when it is still ours.
    pub fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop();
            log::info!(
                "stopped serving {} on {}",
                self.resource,
                self.socket_path.display()
            );
        }
        self.registration.registered = false;
    }

    /// Checks our socket and serves it afresh if it was deleted or replaced, or if an earlier
    /// attempt to serve failed and its retry is due. `kubelet` is the kubelet socket's identity
    /// as last seen, which the next registration waits on when a stream had to end.
    pub fn check_socket(&mut self, shared: &Shared, kubelet: Option<SocketIdentity>, now: Instant) {
        if let Some(server) = &self.server {
            let trigger = match SocketIdentity::of(&self.socket_path) {
                Ok(Some(identity)) if Some(identity) == server.identity() => return,
                Ok(Some(_)) => Trigger::PluginSocketReplaced,
                Ok(None) => Trigger::PluginSocketDeleted,
                Err(errno) => {
                    log::debug!("stat {}: {errno}", self.socket_path.display());
                    return;
                }
            };
            log::info!(
                "{trigger}: serving {} on {} again",
                self.resource,
                self.socket_path.display()
            );
            self.restart(shared, trigger, kubelet, now);
            return;
        }
        if self.serve_retry.due(now) {
            self.serve_with_retry(shared, now);
        }
    }

    /// Stops the server, which ends its streams, serves afresh and registers again once the
    /// kubelet has had time to see the streams end.
    pub fn restart(
        &mut self,
        shared: &Shared,
        trigger: Trigger,
        kubelet: Option<SocketIdentity>,
        now: Instant,
    ) {
        self.stop();
        self.settle_after_stream_end(kubelet, now);
        self.request_registration(trigger);
        self.serve_with_retry(shared, now);
    }

    fn settle_after_stream_end(&mut self, kubelet: Option<SocketIdentity>, now: Instant) {
        self.settle = Some(Settle {
            until: now + SETTLE_DELAY,
            kubelet,
        });
    }

    fn serve_with_retry(&mut self, shared: &Shared, now: Instant) {
        match self.serve(shared) {
            Ok(()) => {
                let failures = self.serve_retry.succeed();
                if failures > 0 {
                    log::info!("served {} after {failures} failed attempts", self.resource);
                }
            }
            Err(error) => {
                if self.serve_retry.fail(now) {
                    log::error!("{error}; retrying with backoff up to {MAX_BACKOFF:?}");
                } else {
                    log::debug!("{error}");
                }
            }
        }
    }

    /// Marks the resource for another Register call, logging why.
    pub fn request_registration(&mut self, trigger: Trigger) {
        log::info!("{trigger}: registering {}", self.resource);
        self.registration.wanted = true;
        self.registration.registered = false;
        self.registration.retry = Retry::default();
    }

    /// Forgets the registration because the kubelet went away.
    pub fn kubelet_gone(&mut self) {
        self.registration.registered = false;
        self.registration.wanted = true;
    }

    /// Starts a Register call when one is wanted, none is in flight, our server is up, and
    /// neither the backoff nor a settle delay for this `kubelet` delays it.
    pub fn register_if_due(&mut self, shared: &Shared, kubelet: SocketIdentity, now: Instant) {
        if let Some(settle) = &self.settle {
            // A restarted kubelet has no record of the old connection, so it needs no wait.
            if settle.kubelet == Some(kubelet) && now < settle.until {
                return;
            }
            self.settle = None;
        }
        let state = &mut self.registration;
        if !state.wanted || state.in_flight.is_some() || self.server.is_none() {
            return;
        }
        if !state.retry.due(now) {
            return;
        }
        state.wanted = false;
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        state.in_flight = Some(epoch);
        log::debug!(
            "registering {} with the kubelet at {} (registration {epoch})",
            self.resource,
            shared.kubelet.socket().display()
        );
        let endpoint = self.index;
        let results = shared.registered.clone();
        shared
            .kubelet
            .register(&self.resource, &self.socket_name, move |result| {
                // The supervisor is gone only during shutdown, when the outcome no longer matters.
                let _ = results.send(Registered {
                    endpoint,
                    epoch,
                    result,
                });
            });
    }

    /// Applies the outcome of a Register call.
    pub fn on_registered(&mut self, outcome: Registered, kubelet_socket: &str, now: Instant) {
        let state = &mut self.registration;
        if state.in_flight != Some(outcome.epoch) {
            return;
        }
        state.in_flight = None;
        match outcome.result {
            Ok(()) => {
                state.registered = true;
                let failures = state.retry.succeed();
                log::info!(
                    "registered {} with the kubelet at {kubelet_socket}, endpoint {}{}",
                    self.resource,
                    self.socket_name,
                    if failures > 0 {
                        format!(", after {failures} failed attempts")
                    } else {
                        String::new()
                    }
                );
            }
            Err(error) if error.contains(ALREADY_CONNECTED) => {
                state.wanted = true;
                state.retry.fail(now);
                log::error!(
                    "the kubelet at {kubelet_socket} rejected {} because it still counts {} as \
                     connected: {error}; kubelet v1.37 keeps that state until it restarts, so \
                     restart the kubelet if this repeats",
                    self.resource,
                    self.socket_name
                );
            }
            Err(error) => {
                state.wanted = true;
                if state.retry.fail(now) {
                    log::warn!(
                        "failed to register {} with the kubelet at {kubelet_socket}: {error}; \
                         retrying with backoff up to {MAX_BACKOFF:?}",
                        self.resource
                    );
                } else {
                    log::debug!(
                        "failed to register {} with the kubelet at {kubelet_socket}: {error}",
                        self.resource
                    );
                }
            }
        }
    }

    /// Asks for a new registration if the stream that ended belonged to the current
    /// registration, whether the kubelet already accepted it or its Register call is in flight.
    pub fn on_stream_ended(
        &mut self,
        ended: &StreamEnded,
        kubelet: Option<SocketIdentity>,
        now: Instant,
    ) {
        let current = self.epoch.load(Ordering::SeqCst);
        let state = &self.registration;
        let current_registration = state.registered || state.in_flight == Some(current);
        if ended.epoch == current && current_registration {
            self.settle_after_stream_end(kubelet, now);
            self.request_registration(Trigger::StreamEnded);
        } else {
            log::debug!(
                "ignored the end of a ListAndWatch stream of {} from registration {} \
                 (current {current})",
                self.resource,
                ended.epoch
            );
        }
    }
}
