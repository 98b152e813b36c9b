//! Fake tun devices: device nodes made with `mknod` and a sysfs tree with the tun driver's
//! `class/misc/tun/dev` entry, both inside the test's temporary directory.

use std::path::Path;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// Major and minor number of the kernel's tun misc device.
pub const TUN_DEVICE: (u64, u64) = (10, 200);
/// Major and minor number of `/dev/null`, a character device that is not tun.
pub const NULL_DEVICE: (u64, u64) = (1, 3);

/// Makes the character device 10:200 at `path`.
pub fn make_tun_node(path: &Path) {
    make_node(path, SFlag::S_IFCHR, TUN_DEVICE);
}

/// Makes a device node of `kind` (`S_IFCHR` or `S_IFBLK`) with `numbers` at `path`.
pub fn make_node(path: &Path, kind: SFlag, (major, minor): (u64, u64)) {
    super::require_root("makes device nodes with mknod");
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(0o600),
        makedev(major, minor),
    )
    .unwrap_or_else(|errno| {
        panic!(
            "mknod {} ({kind:?} {major}:{minor}) failed: {errno}",
            path.display()
        )
    });
}

/// Removes the device node, or whatever file is at `path`.
pub fn remove_node(path: &Path) {
    std::fs::remove_file(path)
        .unwrap_or_else(|error| panic!("failed to remove {}: {error}", path.display()));
}

/// Writes `numbers` (such as `10:200`) to `<sysfs_root>/class/misc/tun/dev`, as the kernel
/// shows it once the tun driver is loaded. The file is replaced in one step, so the daemon
/// never reads it half written.
pub fn write_tun_sysfs(sysfs_root: &Path, numbers: &str) {
    let dir = sysfs_root.join("class/misc/tun");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|error| panic!("failed to create {}: {error}", dir.display()));
    replace(&dir.join("dev"), |path| {
        std::fs::write(path, format!("{numbers}\n"))
            .unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));
    });
}

/// Replaces the file at `path` in one step: `make` creates the new file at a sibling path,
/// which is then renamed over `path`, so the daemon never finds the path missing.
pub fn replace(path: &Path, make: impl FnOnce(&Path)) {
    let staged = path.with_extension("staged");
    make(&staged);
    std::fs::rename(&staged, path).unwrap_or_else(|error| {
        panic!(
            "failed to rename {} to {}: {error}",
            staged.display(),
            path.display()
        )
    });
}

/// Writes an empty regular file at `path`.
pub fn make_regular_file(path: &Path) {
    std::fs::write(path, b"")
        .unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));
}
