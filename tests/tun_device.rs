//! The real tun device: a process in a fresh network namespace opens the host path from the
//! Allocate response and creates a tun interface there, as a container given the slot would.
//!
//! Needs root, a kernel with the tun driver and a host `/dev/net/tun`.
#![allow(unsafe_code)]

mod support;

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::libc;
use nix::net::if_::if_nametoindex;
use nix::sched::{unshare, CloneFlags};
use support::daemon::Daemon;
use support::kubelet::Kubelet;
use support::{allocate_request, call_options, require_root, Sandbox};
use support::{DEFAULT_RESOURCE, DEFAULT_SOCKET};

/// Name of the tun interface the test creates. The kernel allows at most 15 bytes
/// (IFNAMSIZ - 1).
const INTERFACE: &str = "tunmgr-test0";

nix::ioctl_write_ptr_bad!(
    /// Attaches the tun file descriptor `fd` to the interface named in `data`, creating it.
    ///
    /// # Safety
    ///
    /// `fd` must be an open tun file descriptor and `data` must point to a valid `ifreq`.
    tun_set_iff,
    libc::TUNSETIFF,
    libc::ifreq
);

/// What the thread in the new network namespace saw.
#[derive(Debug)]
struct NamespaceReport {
    /// The thread's network namespace, as `/proc/thread-self/ns/net` names it.
    namespace: String,
    /// Whether the interface existed before TUNSETIFF.
    existed_before: bool,
    /// Index of the interface after TUNSETIFF, or the lookup error.
    index_after: Result<u32, String>,
}

/// Returns the network namespace of the calling thread, such as `net:[4026531840]`.
fn thread_namespace() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("read /proc/thread-self/ns/net")
        .display()
        .to_string()
}

/// Moves the calling thread into a new network namespace, opens `host_path` and creates
/// the tun interface `INTERFACE` in that namespace.
fn create_interface_in_new_namespace(host_path: &Path) -> Result<NamespaceReport, String> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|errno| format!("unshare(CLONE_NEWNET) failed: {errno}"))?;
    let namespace = thread_namespace();
    let existed_before = if_nametoindex(INTERFACE).is_ok();

    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open(host_path)
        .map_err(|error| format!("failed to open {}: {error}", host_path.display()))?;
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (slot, byte) in name.iter_mut().zip(INTERFACE.bytes()) {
        *slot = byte as libc::c_char;
    }
    let flags = libc::IFF_TUN | libc::IFF_NO_PI;
    let request = libc::ifreq {
        ifr_name: name,
        ifr_ifru: libc::__c_anonymous_ifr_ifru {
            ifru_flags: libc::c_short::try_from(flags).expect("tun flags fit in a short"),
        },
    };
    // SAFETY: `tun` is an open file descriptor of the tun device for the whole call, and
    // `request` is an initialised ifreq with a NUL-terminated name that outlives the call.
    unsafe { tun_set_iff(tun.as_raw_fd(), &request) }
        .map_err(|errno| format!("TUNSETIFF {INTERFACE} failed: {errno}"))?;

    // The interface lives as long as `tun` is open, so look it up before closing it.
    let index_after = if_nametoindex(INTERFACE).map_err(|errno| errno.to_string());
    drop(tun);
    Ok(NamespaceReport {
        namespace,
        existed_before,
        index_after,
    })
}

#[test]
fn allocated_path_creates_interface() {
    require_root("enters a network namespace and creates a tun interface");
    let sandbox = Sandbox::empty();
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    // The host's real /dev/net/tun and /sys, which are the defaults.
    let plugin_dir = sandbox.plugin_dir.display().to_string();
    let args = ["--plugin-dir", plugin_dir.as_str(), "--devices", "2"].map(String::from);
    let _daemon = Daemon::start_with_args(&sandbox, &args);
    kubelet.wait_registrations(1);
    let list = kubelet.next_list(DEFAULT_RESOURCE);
    assert!(
        list.devices.iter().all(|device| device.health == "Healthy"),
        "expected the host's /dev/net/tun to be Healthy; is the tun module loaded?"
    );

    let response = kubelet
        .plugin_client(DEFAULT_SOCKET)
        .allocate_opt(&allocate_request(&[&["tun1"]]), call_options())
        .expect("expected Allocate of tun1 to succeed");
    let spec = response
        .container_responses
        .first()
        .and_then(|container| container.devices.first())
        .expect("expected a device spec in the Allocate response");
    assert_eq!(
        spec.host_path, "/dev/net/tun",
        "expected the default host path"
    );
    let host_path = Path::new(&spec.host_path).to_owned();

    let report = std::thread::Builder::new()
        .name("new-netns".into())
        .spawn(move || create_interface_in_new_namespace(&host_path))
        .expect("spawn the thread for the new network namespace")
        .join()
        .expect("the namespace thread panicked")
        .unwrap_or_else(|error| panic!("expected to create {INTERFACE}: {error}"));

    assert_ne!(
        report.namespace,
        thread_namespace(),
        "expected the thread to run in a network namespace of its own"
    );
    assert!(
        !report.existed_before,
        "expected no {INTERFACE} in the fresh namespace before TUNSETIFF"
    );
    let index = report
        .index_after
        .unwrap_or_else(|error| panic!("expected {INTERFACE} in the new namespace: {error}"));
    assert!(
        index > 0,
        "expected a positive interface index, got {index}"
    );
    assert!(
        if_nametoindex(INTERFACE).is_err(),
        "expected no {INTERFACE} in the test's own network namespace"
    );
}
