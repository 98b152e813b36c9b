//! Device health: every slot is Healthy only while the node is character device 10:200 and
//! sysfs shows the tun driver as 10:200, and each change reaches the kubelet as a new list.

mod support;

use nix::sys::stat::SFlag;
use support::daemon::Daemon;
use support::devnode::{
    make_node, make_regular_file, make_tun_node, remove_node, replace, write_tun_sysfs,
    NULL_DEVICE, TUN_DEVICE,
};
use support::kubelet::Kubelet;
use support::{Sandbox, DEFAULT_RESOURCE};
use tun_manager::api::api::ListAndWatchResponse;

const SLOTS: usize = 3;

/// Fails unless `list` contains all slots, each with `health`.
fn assert_all(list: &ListAndWatchResponse, health: &str, when: &str) {
    assert_eq!(list.devices.len(), SLOTS, "expected {SLOTS} slots {when}");
    for device in &list.devices {
        assert_eq!(
            device.health, health,
            "expected slot {} to be {health} {when}",
            device.ID
        );
    }
}

/// Starts a kubelet and a daemon on `sandbox` and returns the kubelet once the daemon has
/// registered.
fn start(sandbox: &Sandbox) -> (Kubelet, Daemon) {
    let kubelet = Kubelet::start(&sandbox.plugin_dir);
    let daemon = Daemon::start(sandbox, &["--devices", &SLOTS.to_string()]);
    kubelet.wait_registrations(1);
    (kubelet, daemon)
}

#[test]
fn node_removed_then_recreated() {
    let sandbox = Sandbox::new();
    let (kubelet, _daemon) = start(&sandbox);
    assert_all(
        &kubelet.next_list(DEFAULT_RESOURCE),
        "Healthy",
        "at startup",
    );

    remove_node(&sandbox.device_path);
    assert_all(
        &kubelet.next_list(DEFAULT_RESOURCE),
        "Unhealthy",
        "after the device node was removed",
    );

    make_tun_node(&sandbox.device_path);
    assert_all(
        &kubelet.next_list(DEFAULT_RESOURCE),
        "Healthy",
        "after the device node was recreated",
    );
}

#[test]
fn unhealthy_at_startup() {
    type Setup = fn(&Sandbox);
    let cases: [(&str, Setup); 6] = [
        ("without a device node", |sandbox| {
            write_tun_sysfs(&sandbox.sysfs_root, "10:200");
        }),
        ("with a regular file as device node", |sandbox| {
            make_regular_file(&sandbox.device_path);
            write_tun_sysfs(&sandbox.sysfs_root, "10:200");
        }),
        ("with character device 1:3", |sandbox| {
            make_node(&sandbox.device_path, SFlag::S_IFCHR, NULL_DEVICE);
            write_tun_sysfs(&sandbox.sysfs_root, "10:200");
        }),
        ("with block device 10:200", |sandbox| {
            make_node(&sandbox.device_path, SFlag::S_IFBLK, TUN_DEVICE);
            write_tun_sysfs(&sandbox.sysfs_root, "10:200");
        }),
        ("without class/misc/tun/dev in sysfs", |sandbox| {
            make_tun_node(&sandbox.device_path);
        }),
        ("with sysfs showing 10:201", |sandbox| {
            make_tun_node(&sandbox.device_path);
            write_tun_sysfs(&sandbox.sysfs_root, "10:201");
        }),
    ];
    for (case, setup) in cases {
        let sandbox = Sandbox::empty();
        setup(&sandbox);
        let (kubelet, _daemon) = start(&sandbox);
        assert_all(
            &kubelet.next_list(DEFAULT_RESOURCE),
            "Unhealthy",
            &format!("at startup {case}"),
        );
    }
}

#[test]
fn unhealthy_then_healthy_again() {
    type Change = fn(&Sandbox);
    let restore_node: Change = |sandbox| replace(&sandbox.device_path, make_tun_node);
    let cases: [(&str, Change, Change); 3] = [
        (
            "a regular file replaced the device node",
            |sandbox| replace(&sandbox.device_path, make_regular_file),
            restore_node,
        ),
        (
            "character device 1:3 replaced the device node",
            |sandbox| {
                replace(&sandbox.device_path, |path| {
                    make_node(path, SFlag::S_IFCHR, NULL_DEVICE)
                })
            },
            restore_node,
        ),
        (
            "class/misc/tun was removed from sysfs",
            |sandbox| {
                std::fs::remove_dir_all(sandbox.sysfs_root.join("class/misc/tun"))
                    .expect("remove class/misc/tun from the sysfs tree")
            },
            |sandbox| write_tun_sysfs(&sandbox.sysfs_root, "10:200"),
        ),
    ];
    let sandbox = Sandbox::new();
    let (kubelet, _daemon) = start(&sandbox);
    assert_all(
        &kubelet.next_list(DEFAULT_RESOURCE),
        "Healthy",
        "at startup",
    );

    for (case, break_device, restore_device) in cases {
        break_device(&sandbox);
        assert_all(
            &kubelet.next_list(DEFAULT_RESOURCE),
            "Unhealthy",
            &format!("after {case}"),
        );
        restore_device(&sandbox);
        assert_all(
            &kubelet.next_list(DEFAULT_RESOURCE),
            "Healthy",
            &format!("after the device was restored, when {case}"),
        );
    }
}

#[test]
fn unhealthy_list_after_restart() {
    let sandbox = Sandbox::new();
    let (mut kubelet, _daemon) = start(&sandbox);
    kubelet.next_list(DEFAULT_RESOURCE);
    remove_node(&sandbox.device_path);
    kubelet.next_list(DEFAULT_RESOURCE);

    kubelet.restart();
    kubelet.wait_registrations(1);
    assert_all(
        &kubelet.next_list(DEFAULT_RESOURCE),
        "Unhealthy",
        "on the first stream after a kubelet restart while the node is missing",
    );
}
