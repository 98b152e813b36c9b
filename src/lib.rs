//! tun-manager: a Kubernetes device plugin that hands `/dev/net/tun` to the containers that
//! request it.
//!
//! The daemon registers one or more extended resources with the kubelet over the device-plugin
//! API v1beta1, advertises a fixed number of slots for each, and replies to `Allocate` with a
//! device spec for the host's tun node. A single supervisor thread owns all state; see
//! `supervisor` for the restart triggers it watches.

pub mod allocation;
pub mod api;
pub mod config;
pub mod devices;
pub mod endpoint;
pub mod fanout;
pub mod kubelet;
pub mod logging;
pub mod plugin;
pub mod probe;
pub mod resource;
pub mod server;
pub mod signals;
pub mod stream;
pub mod supervisor;
