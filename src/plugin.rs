//! The `DevicePlugin` gRPC service of one resource name, as served by one server instance.
//!
//! Handlers reply from state fixed at construction (the allocator) or from the fan-out, so no
//! handler waits on the supervisor. Each ListAndWatch stream runs on its own named thread,
//! which this service tracks so the server can join them when it stops.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use grpcio::{RpcContext, RpcStatus, RpcStatusCode, ServerStreamingSink, UnarySink};

use crate::allocation::{preferred_allocation, Allocator};
use crate::api::api::{
    AllocateRequest, AllocateResponse, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse,
};
use crate::api::api_grpc::DevicePlugin;
use crate::fanout::Fanout;
use crate::resource::ResourceName;
use crate::stream::{self, StreamEnd};

/// Report that the kubelet ended a ListAndWatch stream.
#[derive(Debug)]
pub struct StreamEnded {
    /// Index of the resource whose stream ended, as the supervisor numbers them.
    pub endpoint: usize,
    /// Registration epoch that was current when the stream opened.
    pub epoch: u64,
    /// Cause of the end.
    pub reason: String,
}

/// Settings and channels a service instance gets from the endpoint that owns it.
pub struct ServiceContext {
    /// Index of the resource, echoed in `StreamEnded`.
    pub endpoint: usize,
    /// The resource name, for logs.
    pub resource: ResourceName,
    /// Slot checks and the prepared device spec.
    pub allocator: Allocator,
    /// Source of device lists for ListAndWatch.
    pub fanout: Arc<Fanout>,
    /// Registration epoch, bumped by the supervisor on every Register attempt.
    pub epoch: Arc<AtomicU64>,
    /// Channel for stream-end reports.
    pub stream_ended: Sender<StreamEnded>,
    /// How often an idle stream checks whether the kubelet went away.
    pub stream_check_interval: Duration,
}

/// The `DevicePlugin` service. Clones share state, as grpcio clones it per completion queue.
#[derive(Clone)]
pub struct DevicePluginService {
    shared: Arc<Shared>,
}

struct Shared {
    context: ServiceContext,
    /// Disconnects when the server stops, which ends every stream.
    stop: Receiver<()>,
    streams: Mutex<Vec<JoinHandle<()>>>,
}

impl DevicePluginService {
    /// Creates the service; dropping the returned sender ends all of its streams.
    pub fn new(context: ServiceContext) -> (DevicePluginService, Sender<()>) {
        let (stop_sender, stop) = crossbeam_channel::bounded(0);
        let service = DevicePluginService {
            shared: Arc::new(Shared {
                context,
                stop,
                streams: Mutex::new(Vec::new()),
            }),
        };
        (service, stop_sender)
    }

    /// Waits for every stream thread of this service to finish. Call after the stop sender
    /// returned by `new` is dropped.
    pub fn join_streams(&self) {
        let handles = std::mem::take(
            &mut *self
                .shared
                .streams
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for handle in handles {
            if handle.join().is_err() {
                log::error!(
                    "a ListAndWatch thread for {} panicked",
                    self.shared.context.resource
                );
            }
        }
    }

    fn track(&self, handle: JoinHandle<()>) {
        let mut streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        streams.retain(|stream| !stream.is_finished());
        streams.push(handle);
    }
}

/// Returns the callback that logs the end of a stream opened under `epoch` and reports it to
/// the supervisor when the kubelet ended it.
fn stream_end_reporter(context: &ServiceContext, epoch: u64) -> impl FnOnce(StreamEnd) + Send {
    let endpoint = context.endpoint;
    let resource = context.resource.clone();
    let report = context.stream_ended.clone();
    move |end: StreamEnd| match end {
        StreamEnd::Stopped => log::debug!("ListAndWatch for {resource} stopped with the server"),
        StreamEnd::Closed(reason) => {
            log::info!("kubelet ended ListAndWatch for {resource}: {reason}");
            // The supervisor is gone only during shutdown, when the report is not needed.
            let _ = report.send(StreamEnded {
                endpoint,
                epoch,
                reason,
            });
        }
    }
}

/// Sends a unary reply on the call's completion queue. A failed send means the caller left.
fn reply<T: Send + 'static>(ctx: &RpcContext, sink: UnarySink<T>, answer: Result<T, RpcStatus>) {
    let sent = match answer {
        Ok(message) => sink.success(message),
        Err(status) => sink.fail(status),
    };
    ctx.spawn(async move {
        if let Err(error) = sent.await {
            log::debug!("failed to send a reply: {error}");
        }
    });
}

impl DevicePlugin for DevicePluginService {
    fn get_device_plugin_options(
        &mut self,
        ctx: RpcContext,
        _request: Empty,
        sink: UnarySink<DevicePluginOptions>,
    ) {
        log::debug!(
            "GetDevicePluginOptions for {}",
            self.shared.context.resource
        );
        reply(&ctx, sink, Ok(DevicePluginOptions::new()));
    }

    fn list_and_watch(
        &mut self,
        _ctx: RpcContext,
        _request: Empty,
        sink: ServerStreamingSink<ListAndWatchResponse>,
    ) {
        let context = &self.shared.context;
        let epoch = context.epoch.load(Ordering::SeqCst);
        log::info!(
            "kubelet opened ListAndWatch for {} (registration {epoch})",
            context.resource
        );
        let updates = context.fanout.subscribe();
        let on_end = stream_end_reporter(context, epoch);

        // NOTE: every stream gets a thread and nothing caps their number. The kubelet opens one
        // stream per registration, but any client with access to the socket can open more.
        let spawned = stream::spawn(
            sink,
            updates,
            self.shared.stop.clone(),
            context.stream_check_interval,
            on_end,
        );
        match spawned {
            Ok(handle) => self.track(handle),
            // The sink moved into the failed spawn and was dropped, which cancels the call.
            Err(error) => log::error!(
                "failed to start a ListAndWatch thread for {}: {error}",
                context.resource
            ),
        }
    }

    fn get_preferred_allocation(
        &mut self,
        ctx: RpcContext,
        request: PreferredAllocationRequest,
        sink: UnarySink<PreferredAllocationResponse>,
    ) {
        log::debug!(
            "GetPreferredAllocation for {}: {} container requests",
            self.shared.context.resource,
            request.container_requests.len()
        );
        reply(&ctx, sink, Ok(preferred_allocation(&request)));
    }

    fn allocate(
        &mut self,
        ctx: RpcContext,
        request: AllocateRequest,
        sink: UnarySink<AllocateResponse>,
    ) {
        let context = &self.shared.context;
        let answer = context.allocator.allocate(&request).map_err(|error| {
            log::warn!("rejected Allocate for {}: {error}", context.resource);
            RpcStatus::with_message(RpcStatusCode::INVALID_ARGUMENT, error.to_string())
        });
        if answer.is_ok() {
            log::debug!(
                "Allocate for {}: {} container requests",
                context.resource,
                request.container_requests.len()
            );
            log::trace!("Allocate request {request:?}");
        }
        reply(&ctx, sink, answer);
    }

    fn pre_start_container(
        &mut self,
        ctx: RpcContext,
        _request: PreStartContainerRequest,
        sink: UnarySink<PreStartContainerResponse>,
    ) {
        log::debug!("PreStartContainer for {}", self.shared.context.resource);
        reply(&ctx, sink, Ok(PreStartContainerResponse::new()));
    }
}
