"""tun-manager's image, run under runc with the DaemonSet's pod spec against a stand-in kubelet:
registration, advertised slots, the probes, Allocate, the memory limit and SIGTERM."""

from __future__ import annotations

import time
from pathlib import Path

from conftest import TIMEOUT_S

RESOURCE = "devices.anza-labs.dev/tun"
SOCKET = "tun.sock"
SLOTS = 1000


def daemon_flag(pod_spec: dict, flag: str) -> str:
    args = pod_spec["containers"][0]["args"]
    return args[args.index(flag) + 1]


def allocate_one(api, plugin, slot: str = "tun0"):
    pb2, _ = api
    stub = plugin.kubelet.plugin_stub(SOCKET)
    request = pb2.AllocateRequest(
        container_requests=[pb2.ContainerAllocateRequest(devices_ids=[slot])]
    )
    return stub.Allocate(request, timeout=TIMEOUT_S)


def test_registers_with_kubelet(start_plugin):
    plugin = start_plugin()
    registration = plugin.wait_registered()
    assert registration.request.version == "v1beta1"
    assert registration.request.endpoint == SOCKET
    assert registration.request.resource_name == daemon_flag(plugin.pod_spec, "--resource-name")
    assert registration.request.resource_name == RESOURCE
    assert not registration.options.pre_start_required
    assert not registration.options.get_preferred_allocation_available
    assert plugin.kubelet.errors.empty(), plugin.kubelet.errors.get()


def test_advertises_healthy_slots(start_plugin):
    # Healthy needs the device node from the /dev/net hostPath and class/misc/tun/dev in the
    # sysfs that the runtime mounts read-only at /sys, so this also shows that the DaemonSet
    # needs no sysfs volume.
    plugin = start_plugin()
    plugin.wait_registered()
    devices = plugin.kubelet.next_device_list(TIMEOUT_S).devices
    assert len(devices) == SLOTS
    assert {device.ID for device in devices} == {f"tun{index}" for index in range(SLOTS)}
    unhealthy = [device.ID for device in devices if device.health != "Healthy"]
    assert unhealthy == [], plugin.container.output()


def test_probes_pass(start_plugin):
    plugin = start_plugin()
    plugin.wait_registered()
    container_spec = plugin.pod_spec["containers"][0]
    for probe in ("livenessProbe", "readinessProbe"):
        command = container_spec[probe]["exec"]["command"]
        result = plugin.container.exec(command, timeout_s=container_spec[probe]["timeoutSeconds"])
        assert result.returncode == 0, f"{probe} {command}: {result.stdout}{result.stderr}"


def test_probe_fails_for_unserved_resource(start_plugin):
    plugin = start_plugin()
    plugin.wait_registered()
    command = plugin.pod_spec["containers"][0]["livenessProbe"]["exec"]["command"]
    resource_index = command.index("--resource-name") + 1
    wrong = [*command[:resource_index], "squat.ai/tun", *command[resource_index + 1 :]]
    result = plugin.container.exec(wrong)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "squat.ai_tun.sock" in result.stderr
    assert "does not exist" in result.stderr


def test_allocate_returns_device_spec(api, start_plugin):
    plugin = start_plugin()
    plugin.wait_registered()
    response = allocate_one(api, plugin)
    assert len(response.container_responses) == 1
    allocation = response.container_responses[0]
    assert [(d.container_path, d.host_path, d.permissions) for d in allocation.devices] == [
        ("/dev/net/tun", daemon_flag(plugin.pod_spec, "--device-path"), "rwm")
    ]
    assert len(allocation.mounts) == 0
    assert len(allocation.cdi_devices) == 0


def test_memory_stays_under_limit(api, start_plugin, capsys):
    plugin = start_plugin()
    plugin.wait_registered()
    plugin.kubelet.next_device_list(TIMEOUT_S)
    command = plugin.pod_spec["containers"][0]["livenessProbe"]["exec"]["command"]
    # Load the daemon as a busy node does: allocations for many pods, and probes beside it.
    for index in range(200):
        allocate_one(api, plugin, f"tun{index}")
    for _ in range(5):
        assert plugin.container.exec(command).returncode == 0
    limit = plugin.spec["linux"]["resources"]["memory"]["limit"]
    peak = _memory_peak(plugin.cgroups_path)
    rss_kib = _status_kib(plugin.container.pid(), "VmHWM")
    with capsys.disabled():
        print(
            f"\n  memory: cgroup peak {peak / 2**20:.1f} MiB (limit {limit / 2**20:.0f} MiB), "
            f"daemon peak RSS {rss_kib / 1024:.1f} MiB"
        )
    assert peak < limit / 2, f"peak {peak} bytes is over half the {limit}-byte limit"
    assert _memory_limit_hits(plugin.cgroups_path) == 0


def test_sigterm_exits_zero_and_removes_socket(start_plugin, daemonset):
    plugin = start_plugin()
    plugin.wait_registered()
    socket = plugin.plugin_dir / SOCKET
    assert socket.is_socket()
    grace_s = daemonset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    started = time.monotonic()
    plugin.container.kill("TERM")
    status = plugin.container.wait(grace_s)
    elapsed = time.monotonic() - started
    assert status == 0, plugin.container.output()
    assert not socket.exists()
    assert elapsed < grace_s
    assert "received SIGTERM" in plugin.container.output()


def _cgroup_v2() -> bool:
    return Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _memory_peak(cgroups_path: str) -> int:
    if _cgroup_v2():
        return int(Path(f"/sys/fs/cgroup{cgroups_path}/memory.peak").read_text())
    return int(Path(f"/sys/fs/cgroup/memory{cgroups_path}/memory.max_usage_in_bytes").read_text())


def _memory_limit_hits(cgroups_path: str) -> int:
    if _cgroup_v2():
        events = Path(f"/sys/fs/cgroup{cgroups_path}/memory.events").read_text().split()
        return int(events[events.index("max") + 1])
    return int(Path(f"/sys/fs/cgroup/memory{cgroups_path}/memory.failcnt").read_text())


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise KeyError(field)
