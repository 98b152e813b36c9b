//! The stand-in kubelet's handling of one Register call: the dial-back to the plugin, the
//! response, and the ListAndWatch stream it then reads.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver, Sender};
use futures::channel::oneshot;
use futures::executor::block_on;
use futures::future::{select, Either};
use futures::StreamExt;
use grpcio::{
    CallOption, ChannelBuilder, ClientSStreamReceiver, Environment, RpcStatus, RpcStatusCode,
    UnarySink,
};
use tun_manager::api::api::{DevicePluginOptions, Empty, ListAndWatchResponse, RegisterRequest};
use tun_manager::api::api_grpc::DevicePluginClient;

use super::TIMEOUT;

/// API version the kubelet accepts in Register.
const API_VERSION: &str = "v1beta1";
/// Deadline of the GetDevicePluginOptions call made while handling Register. The plugin gives
/// up on Register after 5 seconds, so a slower dial-back is useless anyway.
const DIAL_BACK_TIMEOUT: Duration = Duration::from_secs(5);

/// One accepted registration: the request as the plugin sent it, and the options the plugin
/// returned when dialed back.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The Register request.
    pub request: RegisterRequest,
    /// The GetDevicePluginOptions response.
    pub options: DevicePluginOptions,
    /// Instant at which the stand-in kubelet finished sending its reply to Register.
    pub at: Instant,
}

/// Both ends of the channel that carries the device lists of one resource.
pub(super) type ListChannel = (Sender<ListAndWatchResponse>, Receiver<ListAndWatchResponse>);

/// State shared by the kubelet and the threads that handle Register calls.
pub(super) struct State {
    pub(super) env: Arc<Environment>,
    pub(super) dir: PathBuf,
    pub(super) registrations: (Sender<Registered>, Receiver<Registered>),
    pub(super) lists: Mutex<HashMap<String, ListChannel>>,
    pub(super) handlers: Mutex<Vec<Handler>>,
    /// Number of coming Register calls to reject without dialing back.
    pub(super) rejections: Mutex<usize>,
    /// When set, the next Register call ends its only stream before it replies, and replies
    /// once this receiver gets a message.
    pub(super) reply_gate: Mutex<Option<Receiver<()>>>,
}

/// The thread behind one Register call and the ListAndWatch stream it opened.
pub(super) struct Handler {
    pub(super) cancel: oneshot::Sender<()>,
    pub(super) thread: JoinHandle<()>,
}

impl State {
    pub(super) fn connect(&self, socket: &Path) -> DevicePluginClient {
        // A channel of its own, outside the global subchannel pool, so that a connection to a
        // socket that was deleted is never reused.
        let channel = ChannelBuilder::new(Arc::clone(&self.env))
            .use_local_subchannel_pool(true)
            .connect(&format!("unix:{}", socket.display()));
        DevicePluginClient::new(channel)
    }

    pub(super) fn list_channel(&self, resource: &str) -> ListChannel {
        lock(&self.lists)
            .entry(resource.to_owned())
            .or_insert_with(unbounded)
            .clone()
    }

    /// Drops the registrations and lists that the test has not taken.
    pub(super) fn drain(&self) {
        self.registrations.1.try_iter().for_each(drop);
        for (_, receiver) in lock(&self.lists).values() {
            receiver.try_iter().for_each(drop);
        }
    }

    /// Cancels every Register call and stream, and joins their threads.
    pub(super) fn end_handlers(&self) {
        let handlers = std::mem::take(&mut *lock(&self.handlers));
        for handler in handlers {
            // The thread may have finished already and dropped its receiver.
            let _ = handler.cancel.send(());
            if handler.thread.join().is_err() {
                eprintln!("stand-in kubelet: a Register thread panicked");
            }
        }
    }

    /// Handles one Register call: dial back, reply, then read the stream until `cancelled`.
    pub(super) fn handle_register(
        &self,
        request: RegisterRequest,
        sink: UnarySink<Empty>,
        mut cancelled: oneshot::Receiver<()>,
    ) {
        let resource = request.resource_name.clone();
        let client = self.connect(&self.dir.join(&request.endpoint));
        let options = match self.accept(&request, &client) {
            Ok(options) => options,
            Err((code, message)) => {
                reject(sink, &resource, code, message);
                return;
            }
        };

        // With a gate, this registration's one stream ends before the reply, and no other
        // stream follows, because the kubelet opens one stream per registration.
        let gate = lock(&self.reply_gate).take();
        let stream_ended = gate.is_some();
        if let Some(gate) = gate {
            self.end_stream_then_wait(&client, &resource, &gate);
        }

        if let Err(error) = block_on(sink.success(Empty::new())) {
            eprintln!("stand-in kubelet: failed to reply to Register of {resource}: {error}");
            return;
        }
        let registered = Registered {
            request,
            options,
            at: Instant::now(),
        };
        // The receiver lives in `self`, so the send cannot fail.
        let _ = self.registrations.0.send(registered);

        if stream_ended || matches!(cancelled.try_recv(), Ok(Some(())) | Err(_)) {
            return;
        }
        if let Some(stream) = self.open_stream(&client, &resource) {
            self.watch(stream, &resource, cancelled);
        }
    }

    /// Checks `request` as the kubelet does and dials the plugin back. Returns the plugin's
    /// options, or the status to reject the call with.
    fn accept(
        &self,
        request: &RegisterRequest,
        client: &DevicePluginClient,
    ) -> Result<DevicePluginOptions, (RpcStatusCode, String)> {
        if request.version != API_VERSION {
            let message = format!(
                "unsupported device-plugin API version {:?}",
                request.version
            );
            return Err((RpcStatusCode::INVALID_ARGUMENT, message));
        }
        if take_one(&mut lock(&self.rejections)) {
            let message = "rejected at the test's request".to_owned();
            return Err((RpcStatusCode::UNAVAILABLE, message));
        }
        let options = CallOption::default().timeout(DIAL_BACK_TIMEOUT);
        client
            .get_device_plugin_options_opt(&Empty::new(), options)
            .map_err(|error| {
                let message = format!(
                    "GetDevicePluginOptions on {} failed: {error}",
                    self.dir.join(&request.endpoint).display()
                );
                (RpcStatusCode::UNAVAILABLE, message)
            })
    }

    fn open_stream(
        &self,
        client: &DevicePluginClient,
        resource: &str,
    ) -> Option<ClientSStreamReceiver<ListAndWatchResponse>> {
        match client.list_and_watch_opt(&Empty::new(), CallOption::default()) {
            Ok(stream) => Some(stream),
            Err(error) => {
                eprintln!("stand-in kubelet: failed to open ListAndWatch of {resource}: {error}");
                None
            }
        }
    }

    /// Forwards every list of `stream` until the stream ends or `cancelled` fires.
    fn watch(
        &self,
        mut stream: ClientSStreamReceiver<ListAndWatchResponse>,
        resource: &str,
        mut cancelled: oneshot::Receiver<()>,
    ) {
        let lists = self.list_channel(resource).0;
        loop {
            let outcome = match block_on(select(stream.next(), &mut cancelled)) {
                Either::Left((next, _)) => Some(next),
                Either::Right(_) => None,
            };
            let Some(next) = outcome else {
                stream.cancel();
                return;
            };
            match next {
                Some(Ok(list)) => {
                    // The receiver lives in `self`, so the send cannot fail.
                    let _ = lists.send(list);
                }
                Some(Err(error)) => {
                    eprintln!("stand-in kubelet: ListAndWatch of {resource} failed: {error}");
                    return;
                }
                None => {
                    eprintln!("stand-in kubelet: the plugin ended ListAndWatch of {resource}");
                    return;
                }
            }
        }
    }

    /// Opens ListAndWatch, forwards its first list, cancels it, and waits for `gate`.
    fn end_stream_then_wait(
        &self,
        client: &DevicePluginClient,
        resource: &str,
        gate: &Receiver<()>,
    ) {
        if let Some(mut stream) = self.open_stream(client, resource) {
            match block_on(stream.next()) {
                Some(Ok(list)) => {
                    // The receiver lives in `self`, so the send cannot fail.
                    let _ = self.list_channel(resource).0.send(list);
                }
                other => eprintln!("stand-in kubelet: no first list of {resource}: {other:?}"),
            }
            stream.cancel();
        }
        if gate.recv_timeout(TIMEOUT).is_err() {
            eprintln!(
                "stand-in kubelet: timed out waiting for the test to release the Register reply"
            );
        }
    }
}

/// Decrements `count` and returns true, unless it is already zero.
fn take_one(count: &mut usize) -> bool {
    let available = *count > 0;
    *count = count.saturating_sub(1);
    available
}

/// Fails a Register call with `code` and `message`, and logs why.
fn reject(sink: UnarySink<Empty>, resource: &str, code: RpcStatusCode, message: String) {
    eprintln!("stand-in kubelet: rejected Register of {resource}: {message}");
    // The plugin may have given up already, and then its retry comes as a new call.
    let _ = block_on(sink.fail(RpcStatus::with_message(code, message)));
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
