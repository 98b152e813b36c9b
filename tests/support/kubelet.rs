//! A stand-in kubelet: the Registration server on `<plugin-dir>/kubelet.sock`.
//!
//! Like the kubelet's device manager, it handles each Register call by dialing the plugin at
//! `<plugin-dir>/<endpoint>` and calling GetDevicePluginOptions, replies to Register only once that
//! succeeded, then opens ListAndWatch and keeps every list it receives. Each Register call runs
//! on its own thread, which then reads the stream until the plugin closes it or the test ends it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crossbeam_channel::{bounded, unbounded, RecvTimeoutError, Sender};
use futures::channel::oneshot;
use futures::executor::block_on;
use grpcio::{EnvBuilder, RpcContext, Server, ServerBuilder, ServerCredentials, UnarySink};
use tun_manager::api::api::{Empty, ListAndWatchResponse, RegisterRequest};
use tun_manager::api::api_grpc::{create_registration, DevicePluginClient, Registration};

pub use super::dial_back::Registered;
use super::dial_back::{lock, Handler, State};
use super::TIMEOUT;

/// File name of the kubelet's Registration socket.
const KUBELET_SOCKET: &str = "kubelet.sock";

/// The stand-in kubelet, serving until dropped.
pub struct Kubelet {
    state: Arc<State>,
    server: Option<Server>,
    served_at: Instant,
}

#[derive(Clone)]
struct RegistrationService {
    state: Arc<State>,
}

impl Kubelet {
    /// Starts the kubelet on `<dir>/kubelet.sock`, after deleting every socket in `dir` as the
    /// kubelet's device manager does when it starts.
    pub fn start(dir: &Path) -> Kubelet {
        let env = EnvBuilder::new()
            .cq_count(2)
            .name_prefix("kubelet-grpc")
            .build();
        let state = Arc::new(State {
            env: Arc::new(env),
            dir: dir.to_owned(),
            registrations: unbounded(),
            lists: Mutex::new(HashMap::new()),
            handlers: Mutex::new(Vec::new()),
            rejections: Mutex::new(0),
            reply_gate: Mutex::new(None),
        });
        let mut kubelet = Kubelet {
            state,
            server: None,
            served_at: Instant::now(),
        };
        kubelet.serve();
        kubelet
    }

    /// Restarts the kubelet: ends every stream, stops the server, deletes every socket in the
    /// plugin directory and serves a fresh kubelet.sock. Registrations and lists that the old
    /// kubelet received and the test did not take are forgotten.
    pub fn restart(&mut self) {
        self.stop();
        self.state.drain();
        self.serve();
    }

    /// Ends every open ListAndWatch stream from the kubelet's side, leaving all sockets in place.
    pub fn end_streams(&self) {
        self.state.end_handlers();
    }

    /// Rejects the next `count` Register calls with UNAVAILABLE, without dialing back.
    pub fn reject_registrations(&self, count: usize) {
        *lock(&self.state.rejections) = count;
    }

    /// Returns how many of the rejections asked for by `reject_registrations` are left.
    pub fn rejections_left(&self) -> usize {
        *lock(&self.state.rejections)
    }

    /// Makes the next Register call open ListAndWatch, take the first list, end the stream, and
    /// reply to Register only when the returned sender is used. That registration gets no other
    /// stream.
    ///
    /// The real kubelet opens ListAndWatch while it replies to Register, so a stream can end
    /// before the plugin has the reply.
    pub fn end_stream_before_reply(&self) -> Sender<()> {
        let (release, gate) = bounded(1);
        *lock(&self.state.reply_gate) = Some(gate);
        release
    }

    /// Waits for the next `count` accepted registrations and returns them in arrival order.
    pub fn wait_registrations(&self, count: usize) -> Vec<Registered> {
        let receiver = &self.state.registrations.1;
        (0..count)
            .map(|index| {
                receiver.recv_timeout(TIMEOUT).unwrap_or_else(|_| {
                    panic!(
                        "timed out after {TIMEOUT:?} waiting for registration {} of {count}",
                        index + 1
                    )
                })
            })
            .collect()
    }

    /// Waits until each of `resources` has registered at least once, and returns every
    /// registration received meanwhile. A resource may register twice in a row when two
    /// triggers overlap, such as a replaced kubelet socket and an ended stream.
    pub fn wait_resources(&self, resources: &[&str]) -> Vec<Registered> {
        let deadline = Instant::now() + TIMEOUT;
        let mut registrations: Vec<Registered> = Vec::new();
        loop {
            let missing: Vec<&str> = resources
                .iter()
                .copied()
                .filter(|resource| {
                    !registrations
                        .iter()
                        .any(|registered| registered.request.resource_name == *resource)
                })
                .collect();
            if missing.is_empty() {
                return registrations;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            match self.state.registrations.1.recv_timeout(remaining) {
                Ok(registered) => registrations.push(registered),
                Err(_) => panic!(
                    "timed out after {TIMEOUT:?} waiting for {missing:?} to register; \
                     registered meanwhile: {:?}",
                    registrations
                        .iter()
                        .map(|registered| registered.request.resource_name.as_str())
                        .collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Waits for the next registration that the kubelet accepted at or after `since`, and
    /// returns it. Registrations accepted earlier, such as the second of two that overlapping
    /// triggers started, are skipped.
    pub fn wait_registration_after(&self, since: Instant) -> Registered {
        loop {
            let registered = self.wait_registrations(1).remove(0);
            if registered.at >= since {
                return registered;
            }
        }
    }

    /// Returns the next accepted registration if one has arrived, without waiting.
    pub fn try_registration(&self) -> Option<Registered> {
        self.state.registrations.1.try_recv().ok()
    }

    /// Waits for the next device list received on a ListAndWatch stream of `resource`.
    pub fn next_list(&self, resource: &str) -> ListAndWatchResponse {
        match self.state.list_channel(resource).1.recv_timeout(TIMEOUT) {
            Ok(list) => list,
            Err(RecvTimeoutError::Timeout) => {
                panic!("timed out after {TIMEOUT:?} waiting for a device list of {resource}")
            }
            Err(RecvTimeoutError::Disconnected) => unreachable!("the kubelet keeps a sender"),
        }
    }

    /// Returns the next device list received on a stream of `resource` if one has arrived,
    /// without waiting.
    pub fn try_list(&self, resource: &str) -> Option<ListAndWatchResponse> {
        self.state.list_channel(resource).1.try_recv().ok()
    }

    /// Returns when the current kubelet.sock started serving, after `start` or the last
    /// `restart`.
    pub fn served_at(&self) -> Instant {
        self.served_at
    }

    /// Returns a client of the plugin served at `socket` in the plugin directory.
    pub fn plugin_client(&self, socket: &str) -> DevicePluginClient {
        self.state.connect(&self.state.dir.join(socket))
    }

    fn serve(&mut self) {
        remove_sockets(&self.state.dir);
        let path = self.state.dir.join(KUBELET_SOCKET);
        let service = RegistrationService {
            state: Arc::clone(&self.state),
        };
        let mut server = ServerBuilder::new(Arc::clone(&self.state.env))
            .register_service(create_registration(service))
            .build()
            .expect("build the kubelet's gRPC server");
        server
            .add_listening_port(
                format!("unix:{}", path.display()),
                ServerCredentials::insecure(),
            )
            .unwrap_or_else(|error| panic!("failed to serve {}: {error}", path.display()));
        server.start();
        self.served_at = Instant::now();
        self.server = Some(server);
    }

    fn stop(&mut self) {
        let Some(mut server) = self.server.take() else {
            return;
        };
        let shutdown = server.shutdown();
        server.cancel_all_calls();
        // Shutdown completes only once every call has finished, and the calls in flight finish
        // on their threads.
        self.state.end_handlers();
        if let Err(error) = block_on(shutdown) {
            eprintln!("stand-in kubelet: gRPC shutdown failed: {error}");
        }
        // A call accepted just before the shutdown may have started its thread meanwhile.
        self.state.end_handlers();
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Registration for RegistrationService {
    fn register(&mut self, _ctx: RpcContext, request: RegisterRequest, sink: UnarySink<Empty>) {
        let (cancel, cancelled) = oneshot::channel();
        let state = Arc::clone(&self.state);
        let thread = std::thread::Builder::new()
            .name("kubelet-register".into())
            .spawn(move || state.handle_register(request, sink, cancelled))
            .expect("spawn a thread for the Register call");
        lock(&self.state.handlers).push(Handler { cancel, thread });
    }
}

/// Deletes every unix socket in `dir`, as the kubelet does when it starts.
fn remove_sockets(dir: &Path) {
    use std::os::unix::fs::FileTypeExt;

    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("failed to read {}: {error}", dir.display()));
    for entry in entries {
        let entry = entry.expect("read an entry of the plugin directory");
        let is_socket = entry
            .file_type()
            .map(|kind| kind.is_socket())
            .unwrap_or(false);
        if !is_socket {
            continue;
        }
        match std::fs::remove_file(entry.path()) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => panic!("failed to remove {}: {error}", entry.path().display()),
        }
    }
}
