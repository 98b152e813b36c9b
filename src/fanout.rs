//! Device-list fan-out from the supervisor to the ListAndWatch streams of one resource.
//!
//! The supervisor publishes each new list; every open stream owns a crossbeam receiver and
//! gets the current list at once when it subscribes. The lock guards only in-memory state and
//! is never held across I/O, because sends on unbounded channels do not block.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crossbeam_channel::{unbounded, Receiver, Sender};

use crate::api::api::ListAndWatchResponse;

/// A device list shared by the fan-out and every stream that received it.
pub type DeviceList = Arc<ListAndWatchResponse>;

/// Latest device list plus the streams that want every later one.
pub struct Fanout {
    state: Mutex<State>,
}

struct State {
    current: DeviceList,
    subscribers: Vec<Sender<DeviceList>>,
}

impl Fanout {
    /// Creates a fan-out whose first list is `initial`.
    pub fn new(initial: DeviceList) -> Fanout {
        Fanout {
            state: Mutex::new(State {
                current: initial,
                subscribers: Vec::new(),
            }),
        }
    }

    /// Returns a receiver that yields the current list immediately and every published one.
    pub fn subscribe(&self) -> Receiver<DeviceList> {
        let (sender, receiver) = unbounded();
        let mut state = self.lock();
        // The receiver is alive here, so this send cannot fail.
        let _ = sender.send(Arc::clone(&state.current));
        state.subscribers.push(sender);
        receiver
    }

    /// Stores `list` as current and sends it to every subscriber, dropping closed ones.
    pub fn publish(&self, list: DeviceList) {
        let mut state = self.lock();
        state.current = Arc::clone(&list);
        state
            .subscribers
            .retain(|subscriber| subscriber.send(Arc::clone(&list)).is_ok());
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent even if a holder panicked: every update is one assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::{device_list, Health};

    #[test]
    fn subscriber_gets_current_then_updates() {
        let fanout = Fanout::new(Arc::new(device_list(2, &Health::Healthy)));
        let receiver = fanout.subscribe();
        let first = receiver.try_recv().expect("current list on subscribe");
        assert_eq!(first.devices.len(), 2);
        fanout.publish(Arc::new(device_list(2, &Health::Unhealthy("x".into()))));
        let second = receiver.try_recv().expect("published list");
        assert_eq!(second.devices[0].health, "Unhealthy");
        let late = fanout
            .subscribe()
            .try_recv()
            .expect("current list on subscribe");
        assert_eq!(late.devices[0].health, "Unhealthy");
    }

    #[test]
    fn closed_subscribers_are_dropped() {
        let fanout = Fanout::new(Arc::new(device_list(1, &Health::Healthy)));
        drop(fanout.subscribe());
        let _open = fanout.subscribe();
        assert_eq!(fanout.lock().subscribers.len(), 2);
        fanout.publish(Arc::new(device_list(1, &Health::Healthy)));
        assert_eq!(fanout.lock().subscribers.len(), 1);
    }
}
