//! Responses to `Allocate` and `GetPreferredAllocation`, kept free of gRPC so they can be tested
//! directly and so `Allocate` does nothing but check IDs and copy a prepared response.

use std::collections::HashSet;
use std::fmt;

use crate::api::api::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, DeviceSpec, PreferredAllocationRequest,
    PreferredAllocationResponse,
};
use crate::devices::parse_slot_id;

/// Path of the device inside every container that is allocated a slot.
pub const CONTAINER_DEVICE_PATH: &str = "/dev/net/tun";
/// Device cgroup permissions. Without `m`, runc's cgroup v2 device filter makes `access()` on
/// the node fail inside the container.
pub const DEVICE_PERMISSIONS: &str = "rwm";

/// Rejection of an `Allocate` request.
#[derive(Debug, PartialEq, Eq)]
pub enum AllocateError {
    /// A container request named an ID this resource does not advertise.
    UnknownId {
        /// Index of the container request.
        container: usize,
        /// The ID as sent.
        id: String,
        /// Number of slots the resource advertises.
        slots: u32,
    },
    /// An ID appears twice in the request.
    DuplicateId {
        /// Index of the container request with the second occurrence.
        container: usize,
        /// The repeated ID.
        id: String,
    },
    /// A container request named no IDs at all.
    NoIds {
        /// Index of the container request.
        container: usize,
    },
}

impl fmt::Display for AllocateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownId {
                container,
                id,
                slots,
            } => write!(
                f,
                "container request {container}: unknown device ID {:?}; this plugin \
                 advertises tun0 to tun{}",
                shorten(id),
                slots - 1
            ),
            Self::DuplicateId { container, id } => write!(
                f,
                "container request {container}: device ID {:?} is requested more than once",
                shorten(id)
            ),
            Self::NoIds { container } => {
                write!(f, "container request {container} names no device IDs")
            }
        }
    }
}

impl std::error::Error for AllocateError {}

/// Maximum characters of a rejected ID quoted in an error, so that a huge ID cannot flood the
/// log or overflow the gRPC status message.
const MAX_QUOTED_ID: usize = 64;

/// Returns `id`, cut to `MAX_QUOTED_ID` characters with a trailing "..." when longer.
fn shorten(id: &str) -> String {
    match id.char_indices().nth(MAX_QUOTED_ID) {
        Some((end, _)) => format!("{}...", &id[..end]),
        None => id.to_owned(),
    }
}

/// Builds `Allocate` responses for one resource: every slot maps to the same device spec.
#[derive(Debug, Clone)]
pub struct Allocator {
    slots: u32,
    container_response: ContainerAllocateResponse,
}

impl Allocator {
    /// Creates an allocator for `slots` slots backed by the host device at `host_path`.
    pub fn new(slots: u32, host_path: &str) -> Allocator {
        let mut spec = DeviceSpec::new();
        spec.container_path = CONTAINER_DEVICE_PATH.to_owned();
        spec.host_path = host_path.to_owned();
        spec.permissions = DEVICE_PERMISSIONS.to_owned();
        let mut container_response = ContainerAllocateResponse::new();
        container_response.devices.push(spec);
        Allocator {
            slots,
            container_response,
        }
    }

    /// Returns one container response per container request, or the first invalid ID.
    pub fn allocate(&self, request: &AllocateRequest) -> Result<AllocateResponse, AllocateError> {
        let total: usize = request
            .container_requests
            .iter()
            .map(|container| container.devices_ids.len())
            .sum();
        let mut seen = HashSet::with_capacity(total);
        for (container, container_request) in request.container_requests.iter().enumerate() {
            if container_request.devices_ids.is_empty() {
                return Err(AllocateError::NoIds { container });
            }
            for id in &container_request.devices_ids {
                let Some(index) = parse_slot_id(id, self.slots) else {
                    return Err(AllocateError::UnknownId {
                        container,
                        id: id.clone(),
                        slots: self.slots,
                    });
                };
                if !seen.insert(index) {
                    return Err(AllocateError::DuplicateId {
                        container,
                        id: id.clone(),
                    });
                }
            }
        }
        let mut response = AllocateResponse::new();
        response.container_responses =
            vec![self.container_response.clone(); request.container_requests.len()];
        Ok(response)
    }
}

/// Picks devices for each container: the must-include IDs first, then available ones in the
/// kubelet's order, up to the allocation size. Every slot is the same device, so any choice is
/// as good as another; this only has to be a valid response.
pub fn preferred_allocation(request: &PreferredAllocationRequest) -> PreferredAllocationResponse {
    let mut response = PreferredAllocationResponse::new();
    for container in &request.container_requests {
        let size = usize::try_from(container.allocation_size).unwrap_or(0);
        // The size comes from the caller, so reserve no more than the IDs it sent.
        let capacity =
            size.min(container.must_include_deviceIDs.len() + container.available_deviceIDs.len());
        let mut chosen: Vec<String> = Vec::with_capacity(capacity);
        let mut seen: HashSet<&str> = HashSet::with_capacity(capacity);
        for id in &container.must_include_deviceIDs {
            if seen.insert(id) {
                chosen.push(id.clone());
            }
        }
        for id in &container.available_deviceIDs {
            if chosen.len() >= size {
                break;
            }
            if seen.insert(id) {
                chosen.push(id.clone());
            }
        }
        let mut answer = ContainerPreferredAllocationResponse::new();
        answer.deviceIDs = chosen;
        response.container_responses.push(answer);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::api::{ContainerAllocateRequest, ContainerPreferredAllocationRequest};

    fn request(containers: &[&[&str]]) -> AllocateRequest {
        let mut request = AllocateRequest::new();
        for ids in containers {
            let mut container = ContainerAllocateRequest::new();
            container.devices_ids = ids.iter().map(|id| id.to_string()).collect();
            request.container_requests.push(container);
        }
        request
    }

    #[test]
    fn one_response_per_container() {
        let allocator = Allocator::new(10, "/dev/net/tun");
        let response = allocator
            .allocate(&request(&[&["tun0"], &["tun1", "tun2"]]))
            .expect("valid request");
        assert_eq!(response.container_responses.len(), 2);
        for container in &response.container_responses {
            assert_eq!(container.devices.len(), 1);
            let spec = &container.devices[0];
            assert_eq!(spec.container_path, "/dev/net/tun");
            assert_eq!(spec.host_path, "/dev/net/tun");
            assert_eq!(spec.permissions, "rwm");
            assert!(container.mounts.is_empty());
            assert!(container.envs.is_empty());
        }
    }

    #[test]
    fn host_path_comes_from_config() {
        let allocator = Allocator::new(1, "/host/dev/net/tun");
        let response = allocator.allocate(&request(&[&["tun0"]])).expect("valid");
        assert_eq!(
            response.container_responses[0].devices[0].host_path,
            "/host/dev/net/tun"
        );
        assert_eq!(
            response.container_responses[0].devices[0].container_path,
            "/dev/net/tun"
        );
    }

    #[test]
    fn unknown_id_rejected() {
        let allocator = Allocator::new(10, "/dev/net/tun");
        let error = allocator
            .allocate(&request(&[&["tun0"], &["tun10"]]))
            .expect_err("tun10 is past the pool");
        assert_eq!(
            error,
            AllocateError::UnknownId {
                container: 1,
                id: "tun10".into(),
                slots: 10
            }
        );
        assert!(error.to_string().contains("\"tun10\""), "{error}");
    }

    #[test]
    fn duplicate_id_rejected() {
        let allocator = Allocator::new(10, "/dev/net/tun");
        for containers in [&[&["tun3", "tun3"][..]][..], &[&["tun3"], &["tun3"]]] {
            let error = allocator
                .allocate(&request(containers))
                .expect_err("duplicate is rejected");
            assert!(
                matches!(&error, AllocateError::DuplicateId { id, .. } if id == "tun3"),
                "{error:?}"
            );
        }
    }

    #[test]
    fn long_id_shortened_in_error() {
        let allocator = Allocator::new(10, "/dev/net/tun");
        let long_id = "x".repeat(10_000);
        let error = allocator
            .allocate(&request(&[&[long_id.as_str()]]))
            .expect_err("unknown ID");
        let message = error.to_string();
        assert!(message.len() < 200, "message of {} bytes", message.len());
        assert!(
            message.contains(&format!("{}...", "x".repeat(64))),
            "{message}"
        );
    }

    #[test]
    fn preferred_allocation_huge_size() {
        let mut container = ContainerPreferredAllocationRequest::new();
        container.available_deviceIDs = ["tun0", "tun1"].map(String::from).into();
        container.allocation_size = i32::MAX;
        let mut request = PreferredAllocationRequest::new();
        request.container_requests.push(container);
        let response = preferred_allocation(&request);
        assert_eq!(response.container_responses[0].deviceIDs, ["tun0", "tun1"]);
    }

    #[test]
    fn empty_container_request_rejected() {
        let allocator = Allocator::new(10, "/dev/net/tun");
        let error = allocator.allocate(&request(&[&[]])).expect_err("no IDs");
        assert_eq!(error, AllocateError::NoIds { container: 0 });
    }

    #[test]
    fn preferred_allocation_order() {
        let mut container = ContainerPreferredAllocationRequest::new();
        container.available_deviceIDs = ["tun0", "tun1", "tun2", "tun3"].map(String::from).into();
        container.must_include_deviceIDs = ["tun2", "tun2"].map(String::from).into();
        container.allocation_size = 3;
        let mut request = PreferredAllocationRequest::new();
        request.container_requests.push(container.clone());
        container.allocation_size = -1;
        request.container_requests.push(container);
        let response = preferred_allocation(&request);
        assert_eq!(response.container_responses.len(), 2);
        assert_eq!(
            response.container_responses[0].deviceIDs,
            ["tun2", "tun0", "tun1"]
        );
        assert_eq!(response.container_responses[1].deviceIDs, ["tun2"]);
    }
}
