//! The thread behind one ListAndWatch stream: it forwards device lists from the fan-out to the
//! kubelet and notices when the kubelet goes away.
//!
//! grpcio's sink is a futures `Sink`, driven here by polling with a no-op waker, so the thread
//! needs no async runtime. A closed stream shows up as an error on the next send, or earlier
//! through the sink's readiness, which is checked once per check interval while idle.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::thread;
use std::time::{Duration, Instant};

use crossbeam_channel::{select, Receiver, RecvTimeoutError};
use futures::task::noop_waker;
use futures::{Sink, SinkExt};
use grpcio::{ServerStreamingSink, WriteFlags};

use crate::api::api::ListAndWatchResponse;
use crate::fanout::DeviceList;

/// How long a pending send or close sleeps between polls of its future.
const PENDING_POLL: Duration = Duration::from_millis(1);
/// Maximum wait for the kubelet to take the final status of a stream when the server stops.
const CLOSE_TIMEOUT: Duration = Duration::from_millis(200);

/// Cause of a stream's end.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Our server is stopping, so no registration is needed.
    Stopped,
    /// The kubelet closed or cancelled the stream, or a send failed.
    Closed(String),
}

/// Forwards lists from `updates` to `sink` until `stop` fires or the kubelet closes the call.
pub fn forward(
    mut sink: ServerStreamingSink<ListAndWatchResponse>,
    updates: Receiver<DeviceList>,
    stop: Receiver<()>,
    check_interval: Duration,
) -> StreamEnd {
    loop {
        select! {
            recv(stop) -> _ => {
                close(sink);
                return StreamEnd::Stopped;
            }
            recv(updates) -> list => {
                let Ok(list) = list else {
                    close(sink);
                    return StreamEnd::Stopped;
                };
                // Only the newest list matters when several queued up.
                // NOTE: gRPC completes a send once the transport buffers it, so a peer that never
                // reads lets each new list pile up in gRPC's buffers while health keeps changing.
                let latest = updates.try_iter().last().unwrap_or(list);
                let message = (ListAndWatchResponse::clone(&latest), WriteFlags::default());
                match drive(sink.send(message), &stop) {
                    None => return StreamEnd::Stopped,
                    Some(Err(error)) => return StreamEnd::Closed(error.to_string()),
                    Some(Ok(())) => log::trace!("sent {} devices", latest.devices.len()),
                }
            }
            default(check_interval) => {
                if let Some(reason) = closed_by_peer(&mut sink) {
                    return StreamEnd::Closed(reason);
                }
            }
        }
    }
}

/// Returns the reason when the call has finished on the kubelet's side.
fn closed_by_peer(sink: &mut ServerStreamingSink<ListAndWatchResponse>) -> Option<String> {
    let waker = noop_waker();
    let mut context = Context::from_waker(&waker);
    match Pin::new(sink).poll_ready(&mut context) {
        Poll::Ready(Err(error)) => Some(error.to_string()),
        Poll::Ready(Ok(())) | Poll::Pending => None,
    }
}

/// Ends the call with an OK status, or gives up after `CLOSE_TIMEOUT` so that a stuck peer
/// never holds up shutdown. Dropping an unclosed sink cancels the call.
fn close(mut sink: ServerStreamingSink<ListAndWatchResponse>) {
    let deadline = Instant::now() + CLOSE_TIMEOUT;
    let waker = noop_waker();
    let mut context = Context::from_waker(&waker);
    let mut closing = sink.close();
    loop {
        match Pin::new(&mut closing).poll(&mut context) {
            Poll::Ready(Ok(())) => return,
            Poll::Ready(Err(error)) => {
                log::debug!("failed to close a ListAndWatch stream: {error}");
                return;
            }
            Poll::Pending if Instant::now() >= deadline => {
                log::debug!("closing a ListAndWatch stream timed out after {CLOSE_TIMEOUT:?}");
                return;
            }
            Poll::Pending => thread::sleep(PENDING_POLL),
        }
    }
}

/// Polls `future` to completion, or returns None once `stop` fires while it is still pending.
fn drive<F: Future + Unpin>(mut future: F, stop: &Receiver<()>) -> Option<F::Output> {
    let waker = noop_waker();
    let mut context = Context::from_waker(&waker);
    loop {
        if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut context) {
            return Some(output);
        }
        // The stop channel never carries a message; it only disconnects.
        if let Err(RecvTimeoutError::Disconnected) = stop.recv_timeout(PENDING_POLL) {
            return None;
        }
    }
}

/// Spawns the forwarding thread for one stream and reports its end to `on_end`.
pub fn spawn(
    sink: ServerStreamingSink<ListAndWatchResponse>,
    updates: Receiver<DeviceList>,
    stop: Receiver<()>,
    check_interval: Duration,
    on_end: impl FnOnce(StreamEnd) + Send + 'static,
) -> std::io::Result<thread::JoinHandle<()>> {
    thread::Builder::new()
        .name("list-and-watch".into())
        .spawn(move || on_end(forward(sink, updates, stop, check_interval)))
}
