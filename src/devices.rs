//! Tun slots and the health of the device node behind them.
//!
//! Every slot maps to the same host device; slots only let the scheduler count how many
//! containers on a node may hold it. Slot IDs are `tun0` … `tun{N-1}`, the IDs the original Go
//! tun-manager advertised, so the kubelet's checkpointed allocations stay valid across a switch.

use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::stat::{major, minor, stat, SFlag};

use crate::api::api::{Device, ListAndWatchResponse};

/// Prefix of every slot ID.
pub const SLOT_PREFIX: &str = "tun";
/// Device health value the kubelet counts as allocatable.
pub const HEALTHY: &str = "Healthy";
/// Device health value the kubelet removes from allocatable.
pub const UNHEALTHY: &str = "Unhealthy";
/// Major number of misc character devices.
pub const TUN_MAJOR: u64 = 10;
/// Minor number the kernel gives the tun misc device.
pub const TUN_MINOR: u64 = 200;

/// Returns the slot ID for index `index`.
pub fn slot_id(index: u32) -> String {
    format!("{SLOT_PREFIX}{index}")
}

/// Parses a slot ID into its index, accepting only the exact form `slot_id` produces for an
/// index below `slots` (so `tun01` and `tun+1` are unknown IDs).
pub fn parse_slot_id(id: &str, slots: u32) -> Option<u32> {
    let digits = id.strip_prefix(SLOT_PREFIX)?;
    let canonical = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if !canonical {
        return None;
    }
    digits.parse::<u32>().ok().filter(|index| *index < slots)
}

/// Builds the ListAndWatch message with `slots` devices, all with the same health.
pub fn device_list(slots: u32, health: &Health) -> ListAndWatchResponse {
    let value = if health.is_healthy() {
        HEALTHY
    } else {
        UNHEALTHY
    };
    let mut response = ListAndWatchResponse::new();
    response.devices = (0..slots)
        .map(|index| {
            let mut device = Device::new();
            device.ID = slot_id(index);
            device.health = value.to_owned();
            device
        })
        .collect();
    response
}

/// Health of the device node, with the reason when it is unusable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// The node is a tun character device and the kernel has the tun driver.
    Healthy,
    /// Containers given the node could not use it, for the stated reason.
    Unhealthy(String),
}

impl Health {
    /// Returns true for `Health::Healthy`.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Health::Healthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Healthy => f.write_str(HEALTHY),
            Health::Unhealthy(reason) => write!(f, "{UNHEALTHY} ({reason})"),
        }
    }
}

/// Checks the device node and the kernel's tun driver with stat and one small sysfs read.
#[derive(Debug, Clone)]
pub struct HealthProbe {
    device_path: PathBuf,
    driver_dev_path: PathBuf,
}

impl HealthProbe {
    /// Creates a probe of `device_path` that reads the driver's numbers under `sysfs_root`.
    pub fn new(device_path: &Path, sysfs_root: &Path) -> HealthProbe {
        HealthProbe {
            device_path: device_path.to_owned(),
            driver_dev_path: sysfs_root.join("class/misc/tun/dev"),
        }
    }

    /// Returns Healthy only when the node is character device 10:200 and sysfs shows the tun
    /// driver registered as 10:200. Without the driver, opening the node fails with ENODEV.
    pub fn check(&self) -> Health {
        match self.check_node().and_then(|()| self.check_driver()) {
            Ok(()) => Health::Healthy,
            Err(reason) => Health::Unhealthy(reason),
        }
    }

    fn check_node(&self) -> Result<(), String> {
        let path = self.device_path.display();
        let info = stat(&self.device_path).map_err(|errno| format!("stat {path}: {errno}"))?;
        let kind = SFlag::from_bits_truncate(info.st_mode) & SFlag::S_IFMT;
        if kind != SFlag::S_IFCHR {
            return Err(format!("{path} is not a character device"));
        }
        let (node_major, node_minor) = (major(info.st_rdev), minor(info.st_rdev));
        if (node_major, node_minor) != (TUN_MAJOR, TUN_MINOR) {
            return Err(format!(
                "{path} is device {node_major}:{node_minor}, not the tun device \
                 {TUN_MAJOR}:{TUN_MINOR}"
            ));
        }
        Ok(())
    }

    fn check_driver(&self) -> Result<(), String> {
        let path = self.driver_dev_path.display();
        let numbers = fs::read_to_string(&self.driver_dev_path).map_err(|error| {
            if error.kind() == io::ErrorKind::NotFound {
                format!("{path} is missing: the kernel has no tun driver, load the tun module")
            } else {
                format!("failed to read {path}: {error}")
            }
        })?;
        let expected = format!("{TUN_MAJOR}:{TUN_MINOR}");
        if numbers.trim() != expected {
            return Err(format!(
                "{path} reads {:?}, not the tun driver's {expected}",
                numbers.trim()
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ids_round_trip() {
        for index in [0, 1, 9, 10, 999] {
            assert_eq!(parse_slot_id(&slot_id(index), 1000), Some(index));
        }
    }

    #[test]
    fn non_canonical_ids_unknown() {
        for id in [
            "tun1000", "tun01", "tun", "tun-1", "tun+1", "Tun1", "tap1", "1", "",
        ] {
            assert_eq!(parse_slot_id(id, 1000), None, "{id:?}");
        }
        assert_eq!(parse_slot_id("tun99999999999999999999", u32::MAX), None);
    }

    #[test]
    fn device_list_health() {
        let healthy = device_list(3, &Health::Healthy);
        let ids: Vec<&str> = healthy.devices.iter().map(|d| d.ID.as_str()).collect();
        assert_eq!(ids, ["tun0", "tun1", "tun2"]);
        assert!(healthy.devices.iter().all(|d| d.health == HEALTHY));
        let unhealthy = device_list(2, &Health::Unhealthy("gone".into()));
        assert!(unhealthy.devices.iter().all(|d| d.health == UNHEALTHY));
    }

    #[test]
    fn missing_node_is_unhealthy() {
        let dir = std::env::temp_dir().join(format!("tun-manager-probe-{}", std::process::id()));
        let probe = HealthProbe::new(&dir.join("absent"), &dir);
        let Health::Unhealthy(reason) = probe.check() else {
            panic!("a missing node must be unhealthy");
        };
        assert!(reason.contains("absent"), "{reason}");
    }
}
