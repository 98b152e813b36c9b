//! A tun interface created in a fresh network namespace through a given device path, as a
//! container given a slot would create one. Needs root and a kernel with the tun driver.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::Path;

use nix::libc;
use nix::net::if_::if_nametoindex;
use nix::sched::{unshare, CloneFlags};

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

/// Observations from the thread in the new network namespace.
#[derive(Debug)]
pub struct NamespaceReport {
    /// The thread's network namespace, as `/proc/thread-self/ns/net` names it.
    pub namespace: String,
    /// Whether the interface existed before TUNSETIFF.
    pub existed_before: bool,
    /// Index of the interface after TUNSETIFF, or the lookup error.
    pub index_after: Result<u32, String>,
}

/// Returns the network namespace of the calling thread, such as `net:[4026531840]`.
pub fn thread_namespace() -> String {
    std::fs::read_link("/proc/thread-self/ns/net")
        .expect("read /proc/thread-self/ns/net")
        .display()
        .to_string()
}

/// Moves the calling thread into a new network namespace, opens `host_path` and creates the tun
/// interface `interface` in that namespace. `while_open` runs in the namespace while the
/// interface exists, which is until the file descriptor closes.
pub fn create_interface_in_new_namespace(
    host_path: &Path,
    interface: &str,
    while_open: impl FnOnce(),
) -> Result<NamespaceReport, String> {
    unshare(CloneFlags::CLONE_NEWNET)
        .map_err(|errno| format!("unshare(CLONE_NEWNET) failed: {errno}"))?;
    let namespace = thread_namespace();
    let existed_before = if_nametoindex(interface).is_ok();

    let tun = OpenOptions::new()
        .read(true)
        .write(true)
        .open(host_path)
        .map_err(|error| format!("failed to open {}: {error}", host_path.display()))?;
    let mut name = [0 as libc::c_char; libc::IFNAMSIZ];
    for (slot, byte) in name.iter_mut().zip(interface.bytes()) {
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
        .map_err(|errno| format!("TUNSETIFF {interface} failed: {errno}"))?;

    // The interface lives as long as `tun` is open, so look it up before closing it.
    let index_after = if_nametoindex(interface).map_err(|errno| errno.to_string());
    while_open();
    drop(tun);
    Ok(NamespaceReport {
        namespace,
        existed_before,
        index_after,
    })
}
