//! Invalid flags: the daemon exits with status 2, names the flag on stderr and serves nothing.

mod support;

use support::daemon::Daemon;
use support::Sandbox;

/// Runs the daemon with the sandbox's flags, except those that `flags` sets, plus `flags`, and
/// checks that it exits with status 2 and names `flag`.
fn assert_rejected(flags: &[&str], flag: &str) {
    let sandbox = Sandbox::empty();
    let base = sandbox.daemon_flags();
    let mut args: Vec<String> = Vec::new();
    for pair in base.chunks(2) {
        if !flags.contains(&pair[0].as_str()) {
            args.extend_from_slice(pair);
        }
    }
    args.extend(flags.iter().map(|flag| flag.to_string()));

    let mut daemon = Daemon::start_with_args(&sandbox, &args);
    let status = daemon.wait_exit();
    let output = daemon.output();
    assert_eq!(
        status.code(),
        Some(2),
        "expected exit status 2 for {flags:?}, got {status}; output:\n{output}"
    );
    assert!(
        output.contains(flag),
        "expected the output for {flags:?} to name {flag}:\n{output}"
    );
    assert!(
        !output.contains("panicked"),
        "expected no panic for {flags:?}:\n{output}"
    );
    let entries: Vec<_> = std::fs::read_dir(&sandbox.plugin_dir)
        .expect("read the plugin directory")
        .collect();
    assert!(
        entries.is_empty(),
        "expected nothing in the plugin directory after {flags:?}, found {entries:?}"
    );
}

/// Returns an absolute directory path of `length` bytes under the temporary directory.
fn long_dir(length: usize) -> String {
    let prefix = std::env::temp_dir().join("tun-manager-");
    let prefix = prefix.display().to_string();
    assert!(
        prefix.len() < length,
        "expected {prefix} to be shorter than {length} bytes"
    );
    format!("{prefix}{}", "d".repeat(length - prefix.len()))
}

#[test]
fn devices_out_of_range() {
    for value in ["0", "100001", "4294967295", "4294967296", "-1", "many"] {
        assert_rejected(&["--devices", value], "--devices");
    }
}

#[test]
fn relative_paths() {
    for flag in [
        "--plugin-dir",
        "--kubelet-socket",
        "--device-path",
        "--sysfs-root",
    ] {
        assert_rejected(&[flag, "relative/path"], flag);
    }
}

#[test]
fn invalid_resource_names() {
    let long_name = format!("squat.ai/{}", "t".repeat(64));
    for value in [
        "tun",
        "kubernetes.io/tun",
        "node.kubernetes.io/tun",
        "Squat.ai/tun",
        "squat.ai/",
        "/tun",
        "squat.ai/tun/x",
        "squat.ai/-tun",
        long_name.as_str(),
    ] {
        assert_rejected(&["--resource-name", value], "--resource-name");
    }
    assert_rejected(
        &[
            "--resource-name",
            "squat.ai/tun",
            "--resource-name",
            "squat.ai/tun",
        ],
        "--resource-name",
    );
}

#[test]
fn socket_path_too_long() {
    // The kubelet.sock path of this directory is 105 bytes and fits the 107-byte limit, but
    // the squat.ai_tun.sock path is 110 bytes.
    let dir = long_dir(92);
    assert_rejected(
        &["--plugin-dir", &dir, "--resource-name", "squat.ai/tun"],
        "--plugin-dir",
    );
    let socket = format!("{}/kubelet.sock", long_dir(100));
    assert_rejected(&["--kubelet-socket", &socket], "--kubelet-socket");
}

#[test]
fn plugin_dir_too_long_for_kubelet_socket() {
    // Only --plugin-dir is given, so the message must name it rather than the derived
    // --kubelet-socket the operator never passed.
    assert_rejected(&["--plugin-dir", &long_dir(100)], "--plugin-dir");
}

#[test]
fn poll_interval_out_of_range() {
    for value in ["0", "9", "60001", "-5", "fast"] {
        assert_rejected(&["--poll-interval-ms", value], "--poll-interval-ms");
    }
}

#[test]
fn unknown_flag_and_log_level() {
    assert_rejected(&["--log-level", "loud"], "--log-level");
    assert_rejected(&["--frobnicate", "1"], "--frobnicate");
}
