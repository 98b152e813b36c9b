//! The supervisor: the one thread that owns all daemon state and decides every action.
//!
//! It waits on signals, Register outcomes, ended streams and a poll tick. On each tick it stats
//! kubelet.sock, where a new file means the kubelet restarted. It stats each plugin socket,
//! which the kubelet deletes when it restarts, and the device node for health. Then it serves,
//! registers and publishes device lists as needed.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{select, tick, unbounded, Receiver};
use grpcio::{EnvBuilder, Environment};

use crate::allocation::Allocator;
use crate::config::Config;
use crate::devices::{device_list, Health, HealthProbe};
use crate::endpoint::{Endpoint, Registered, Shared, Trigger};
use crate::kubelet::{KubeletClient, SocketIdentity};
use crate::plugin::StreamEnded;
use crate::server::ServeError;
use crate::signals::{SignalEvent, SignalThread};

/// Error that stops the daemon at start.
#[derive(Debug)]
pub enum StartError {
    /// Signal handlers could not be installed.
    Signals(std::io::Error),
    /// A plugin socket could not be served.
    Serve(ServeError),
    /// The supervisor thread could not be spawned.
    Thread(std::io::Error),
    /// The supervisor thread panicked; its message is in the log above.
    Panicked,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signals(error) => write!(f, "failed to install signal handlers: {error}"),
            Self::Serve(error) => error.fmt(f),
            Self::Thread(error) => write!(f, "failed to spawn the supervisor thread: {error}"),
            Self::Panicked => write!(f, "the supervisor thread panicked"),
        }
    }
}

impl std::error::Error for StartError {}

/// Channels the supervisor waits on.
struct Inbox {
    signals: Receiver<SignalEvent>,
    registered: Receiver<Registered>,
    stream_ended: Receiver<StreamEnded>,
}

/// Runs the daemon on a thread named `supervisor` until SIGTERM or SIGINT. Returns an error
/// only if it cannot start; every later failure is logged and retried.
pub fn run(config: Config) -> Result<(), StartError> {
    let (signal_sender, signals) = unbounded();
    let signal_thread = SignalThread::start(signal_sender).map_err(StartError::Signals)?;
    let supervisor = std::thread::Builder::new()
        .name("supervisor".into())
        .spawn(move || {
            let (mut supervisor, inbox) = Supervisor::start(&config, signals)?;
            supervisor.run(&inbox);
            supervisor.stop();
            log::info!("stopped");
            Ok(())
        })
        .map_err(StartError::Thread)?;
    let result = supervisor.join().unwrap_or(Err(StartError::Panicked));
    signal_thread.stop();
    result
}

struct Supervisor {
    shared: Shared,
    endpoints: Vec<Endpoint>,
    probe: HealthProbe,
    health: Health,
    slots: u32,
    kubelet_identity: Option<SocketIdentity>,
    kubelet_socket: String,
    config: Config,
}

impl Supervisor {
    fn start(config: &Config, signals: Receiver<SignalEvent>) -> Result<(Self, Inbox), StartError> {
        let env: Arc<Environment> =
            Arc::new(EnvBuilder::new().cq_count(1).name_prefix("grpc").build());
        let (stream_sender, stream_ended) = unbounded();
        let (registered_sender, registered) = unbounded();
        let shared = Shared {
            kubelet: KubeletClient::new(Arc::clone(&env), &config.kubelet_socket),
            env,
            stream_ended: stream_sender,
            registered: registered_sender,
        };
        let probe = HealthProbe::new(&config.device_path, &config.sysfs_root);
        let health = probe.check();
        log_health(&health, &config.device_path.display().to_string());
        let endpoints = build_endpoints(config, &health);

        let kubelet_identity = SocketIdentity::of(&config.kubelet_socket).ok().flatten();
        if kubelet_identity.is_none() {
            log::warn!(
                "kubelet socket {} not found; waiting for the kubelet to create it",
                config.kubelet_socket.display()
            );
        }

        let mut supervisor = Supervisor {
            shared,
            endpoints,
            probe,
            health,
            slots: config.devices,
            kubelet_identity,
            kubelet_socket: config.kubelet_socket.display().to_string(),
            config: config.clone(),
        };

        for index in 0..supervisor.endpoints.len() {
            if let Err(error) = supervisor.endpoints[index].serve(&supervisor.shared) {
                supervisor.stop();
                return Err(StartError::Serve(error));
            }
            supervisor.endpoints[index].request_registration(Trigger::Startup);
        }
        let inbox = Inbox {
            signals,
            registered,
            stream_ended,
        };
        Ok((supervisor, inbox))
    }

    fn run(&mut self, inbox: &Inbox) {
        log::info!(
            "supervising {} resources with {} slots each; kubelet socket {}, poll interval {:?}",
            self.endpoints.len(),
            self.slots,
            self.kubelet_socket,
            self.config.poll_interval
        );
        let ticks = tick(self.config.poll_interval);
        self.on_tick();
        loop {
            select! {
                recv(inbox.signals) -> event => match event {
                    Ok(SignalEvent::Stop(name)) => {
                        log::info!("received {name}, stopping");
                        return;
                    }
                    Ok(SignalEvent::Reregister) => self.restart_all(Trigger::Sighup),
                    Err(_) => return,
                },
                recv(inbox.registered) -> outcome => {
                    if let Ok(outcome) = outcome {
                        let now = Instant::now();
                        let socket = self.kubelet_socket.clone();
                        if let Some(endpoint) = self.endpoints.get_mut(outcome.endpoint) {
                            endpoint.on_registered(outcome, &socket, now);
                        }
                    }
                },
                recv(inbox.stream_ended) -> ended => {
                    if let Ok(ended) = ended {
                        // A restarting kubelet ends the stream and replaces the sockets. A full
                        // tick checks the sockets first, the plugin socket before kubelet.sock,
                        // so one registration covers both triggers, and a plugin socket that the
                        // new kubelet deleted is tied to the old kubelet and waits no settle
                        // delay.
                        self.on_tick();
                        let kubelet = self.kubelet_identity;
                        if let Some(endpoint) = self.endpoints.get_mut(ended.endpoint) {
                            endpoint.on_stream_ended(&ended, kubelet, Instant::now());
                        }
                        self.register_due(Instant::now());
                    }
                },
                recv(ticks) -> _ => self.on_tick(),
            }
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        self.check_health();
        // Sockets before the kubelet: a socket deleted by a restarting kubelet must be tied to
        // the old kubelet instance, so that the new one is registered with at once.
        for endpoint in &mut self.endpoints {
            endpoint.check_socket(&self.shared, self.kubelet_identity, now);
        }
        self.check_kubelet();
        // A trigger handled above resets the backoff to the current instant, which is later
        // than `now`, so a fresh instant lets its Register call start in this tick.
        self.register_due(Instant::now());
    }

    fn register_due(&mut self, now: Instant) {
        let Some(kubelet) = self.kubelet_identity else {
            return;
        };
        for endpoint in &mut self.endpoints {
            endpoint.register_if_due(&self.shared, kubelet, now);
        }
    }

    fn check_health(&mut self) {
        let health = self.probe.check();
        if health == self.health {
            return;
        }
        log_health(&health, &self.config.device_path.display().to_string());
        let list = Arc::new(device_list(self.slots, &health));
        for endpoint in &self.endpoints {
            endpoint.publish(Arc::clone(&list));
        }
        self.health = health;
    }

    fn check_kubelet(&mut self) {
        let identity = match SocketIdentity::of(&self.config.kubelet_socket) {
            Ok(identity) => identity,
            Err(errno) => {
                log::debug!("stat {}: {errno}", self.kubelet_socket);
                return;
            }
        };
        if identity == self.kubelet_identity {
            return;
        }
        let previous = std::mem::replace(&mut self.kubelet_identity, identity);
        match (previous, identity) {
            (_, None) => {
                log::warn!(
                    "kubelet socket {} removed; waiting for the kubelet to create it again",
                    self.kubelet_socket
                );
                self.endpoints.iter_mut().for_each(Endpoint::kubelet_gone);
            }
            (None, Some(_)) => self.reregister_all(Trigger::KubeletSocketCreated),
            (Some(_), Some(_)) => self.reregister_all(Trigger::KubeletSocketReplaced),
        }
    }

    /// Serves every socket afresh and registers again after the old streams end, because
    /// kubelet v1.37 rejects a Register for a socket it still counts as connected.
    fn restart_all(&mut self, trigger: Trigger) {
        let now = Instant::now();
        for endpoint in &mut self.endpoints {
            endpoint.restart(&self.shared, trigger, self.kubelet_identity, now);
        }
    }

    fn reregister_all(&mut self, trigger: Trigger) {
        for endpoint in &mut self.endpoints {
            endpoint.request_registration(trigger);
        }
    }

    fn stop(&mut self) {
        for endpoint in &mut self.endpoints {
            endpoint.stop();
        }
    }
}

/// Creates one endpoint per resource name, each starting with the same device list.
fn build_endpoints(config: &Config, health: &Health) -> Vec<Endpoint> {
    let initial = Arc::new(device_list(config.devices, health));
    let host_path = config.device_path.display().to_string();
    config
        .resources
        .iter()
        .enumerate()
        .map(|(index, resource)| {
            Endpoint::new(
                index,
                resource.clone(),
                config.socket_path(resource),
                Allocator::new(config.devices, &host_path),
                Arc::clone(&initial),
            )
        })
        .collect()
}

fn log_health(health: &Health, device_path: &str) {
    match health {
        Health::Healthy => log::info!("device {device_path} is healthy"),
        Health::Unhealthy(reason) => {
            log::warn!("device {device_path} is unhealthy, all slots marked Unhealthy: {reason}")
        }
    }
}
