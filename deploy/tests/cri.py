"""Turn a Kubernetes pod spec and a device plugin's Allocate response into an OCI runtime spec
for runc, the way containerd's CRI plugin does for the fields these manifests use.

Covered: command and args, runAsUser and runAsGroup, capabilities (containerd's default set,
then drop and add), allowPrivilegeEscalation, readOnlyRootFilesystem, RuntimeDefault seccomp,
hostPath volumes, CPU and memory resources, and the device specs, environment variables,
mounts and annotations of a ContainerAllocateResponse. Not covered: the files the kubelet
mounts into every container (/etc/hosts, /etc/resolv.conf, the termination log), probes and
restarts, which the tests drive themselves.

Host paths are resolved under a "node root" directory, so a test lays out a node's files
(the kubelet's plugin directory, /dev/net) in a temporary directory and never touches the real
ones.
"""

from __future__ import annotations

import json
import os
import platform
import stat
from pathlib import Path

# containerd's default capability set for a container (pkg/oci, defaultUnixCaps, containerd
# 1.7 and 2.0).
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

# Paths containerd's CRI plugin masks or makes read-only in every unprivileged container.
MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

# The default seccomp profile of CRI-O and podman, from Debian's golang-github-containers-common.
# containerd's RuntimeDefault profile comes from the same Docker profile and differs in detail.
SECCOMP_PROFILE = Path("/usr/share/containers/seccomp.json")

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CPU_PERIOD_US = 100_000


def base_spec(rootfs: Path) -> dict:
    """Returns the parts of a runtime spec that containerd sets for every Linux container."""
    return {
        "ociVersion": "1.0.2",
        "process": {"terminal": False, "cwd": "/", "env": [f"PATH={DEFAULT_PATH}"]},
        "root": {"path": str(rootfs)},
        "mounts": [
            {
                "destination": "/proc",
                "type": "proc",
                "source": "proc",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": [
                    "nosuid",
                    "noexec",
                    "newinstance",
                    "ptmxmode=0666",
                    "mode=0620",
                    "gid=5",
                ],
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"],
            },
            {
                "destination": "/sys",
                "type": "sysfs",
                "source": "sysfs",
                "options": ["nosuid", "noexec", "nodev", "ro"],
            },
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
            },
        ],
        "linux": {
            "namespaces": [{"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount")],
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def container_spec(
    *,
    rootfs: Path,
    pod_spec: dict,
    container: dict,
    node_root: Path,
    cgroups_path: str,
    image_entrypoint: list[str] | None = None,
    image_env: list[str] | None = None,
    netns_path: Path | None = None,
    allocation=None,
) -> dict:
    """Builds the runtime spec for `container` of `pod_spec`.

    `allocation` is a ContainerAllocateResponse from the device plugin, or None for a container
    that requested no device. `netns_path` joins an existing network namespace; without it runc
    creates a new one.
    """
    spec = base_spec(rootfs)
    process = spec["process"]
    linux = spec["linux"]

    process["args"] = _command(container, image_entrypoint)
    process["env"] = list(image_env or process["env"])
    process["env"] += [
        f"{item['name']}={item.get('value', '')}" for item in container.get("env", [])
    ]

    pod_security = pod_spec.get("securityContext", {})
    security = {**pod_security, **container.get("securityContext", {})}
    uid = int(security.get("runAsUser", 0))
    gid = int(security.get("runAsGroup", 0))
    if security.get("runAsNonRoot") and uid == 0:
        raise ValueError(f"container {container['name']}: runAsNonRoot is true but runAsUser is 0")
    process["user"] = {"uid": uid, "gid": gid}
    capabilities = _capabilities(security.get("capabilities", {}))
    # The kernel clears the effective and permitted sets when a non-root user execs a program,
    # and containerd sets no ambient capabilities, so only UID 0 keeps them.
    granted = capabilities if uid == 0 else []
    process["capabilities"] = {
        "bounding": capabilities,
        "effective": granted,
        "permitted": granted,
        "inheritable": [],
        "ambient": [],
    }
    process["noNewPrivileges"] = not security.get("allowPrivilegeEscalation", True)
    spec["root"]["readonly"] = bool(security.get("readOnlyRootFilesystem", False))
    if security.get("privileged"):
        raise ValueError(f"container {container['name']}: privileged containers are not covered")

    seccomp = security.get("seccompProfile", {}).get("type", "Unconfined")
    if seccomp == "RuntimeDefault":
        linux["seccomp"] = runtime_default_seccomp(capabilities if uid == 0 else [])
    elif seccomp != "Unconfined":
        raise ValueError(f"container {container['name']}: seccomp profile {seccomp} is not covered")

    spec["hostname"] = pod_spec.get("hostname", container["name"])
    spec["mounts"] += _volume_mounts(pod_spec, container, node_root)
    linux["resources"].update(_resources(container.get("resources", {})))
    linux["cgroupsPath"] = cgroups_path
    if netns_path is not None:
        linux["namespaces"] = [
            {"type": "network", "path": str(netns_path)} if item["type"] == "network" else item
            for item in linux["namespaces"]
        ]
    if allocation is not None:
        apply_allocation(spec, allocation, node_root)
    return spec


def apply_allocation(spec: dict, allocation, node_root: Path) -> None:
    """Adds a ContainerAllocateResponse to `spec` as containerd does.

    Each device spec becomes a `linux.devices` entry at its container path, with the type,
    numbers, mode and owner of the host node, and a `linux.resources.devices` rule that allows
    that device with the plugin's permissions.
    """
    if len(allocation.cdi_devices) != 0:
        raise ValueError("CDI devices in the Allocate response are not covered")
    devices = spec["linux"].setdefault("devices", [])
    rules = spec["linux"]["resources"].setdefault("devices", [])
    for device in allocation.devices:
        host_node = node_root / device.host_path.lstrip("/")
        status = os.stat(host_node)
        if stat.S_ISCHR(status.st_mode):
            kind = "c"
        elif stat.S_ISBLK(status.st_mode):
            kind = "b"
        else:
            raise ValueError(
                f"host path {device.host_path} of an allocated device is not a device node"
            )
        major, minor = os.major(status.st_rdev), os.minor(status.st_rdev)
        devices.append(
            {
                "path": device.container_path,
                "type": kind,
                "major": major,
                "minor": minor,
                "fileMode": stat.S_IMODE(status.st_mode),
                "uid": status.st_uid,
                "gid": status.st_gid,
            }
        )
        rules.append(
            {
                "allow": True,
                "type": kind,
                "major": major,
                "minor": minor,
                "access": device.permissions,
            }
        )
    for mount in allocation.mounts:
        spec["mounts"].append(
            {
                "destination": mount.container_path,
                "type": "bind",
                "source": str(node_root / mount.host_path.lstrip("/")),
                "options": ["rbind", "rprivate", "ro" if mount.read_only else "rw"],
            }
        )
    spec["process"]["env"] += [f"{name}={value}" for name, value in allocation.envs.items()]
    spec.setdefault("annotations", {}).update(dict(allocation.annotations))


def runtime_default_seccomp(capabilities: list[str]) -> dict:
    """Converts the containers-common default profile into the runtime spec's form for a
    process with `capabilities`, keeping the rules for this machine's architecture."""
    profile = json.loads(SECCOMP_PROFILE.read_text())

    go_arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    seccomp_arch = {"amd64": "SCMP_ARCH_X86_64", "arm64": "SCMP_ARCH_AARCH64"}[go_arch]
    architectures = []
    for entry in profile["archMap"]:
        if entry["architecture"] == seccomp_arch:
            architectures = [entry["architecture"], *entry.get("subArchitectures", [])]

    syscalls = []
    for rule in profile["syscalls"]:
        includes = rule.get("includes") or {}
        excludes = rule.get("excludes") or {}
        if includes.get("arches") and go_arch not in includes["arches"]:
            continue
        if includes.get("caps") and not all(cap in capabilities for cap in includes["caps"]):
            continue
        if excludes.get("arches") and go_arch in excludes["arches"]:
            continue
        if excludes.get("caps") and any(cap in capabilities for cap in excludes["caps"]):
            continue
        converted = {"names": rule["names"], "action": rule["action"]}
        if rule.get("args"):
            converted["args"] = rule["args"]
        if "errnoRet" in rule:
            converted["errnoRet"] = rule["errnoRet"]
        syscalls.append(converted)

    seccomp = {
        "defaultAction": profile["defaultAction"],
        "architectures": architectures,
        "syscalls": syscalls,
    }
    if "defaultErrnoRet" in profile:
        seccomp["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return seccomp


def _command(container: dict, image_entrypoint: list[str] | None) -> list[str]:
    # Kubernetes: `command` replaces the image's ENTRYPOINT, `args` its CMD.
    if container.get("command"):
        return [*container["command"], *container.get("args", [])]
    if not image_entrypoint:
        raise ValueError(
            f"container {container['name']} has no command and the image no entrypoint"
        )
    return [*image_entrypoint, *container.get("args", [])]


def _capabilities(settings: dict) -> list[str]:
    drop = {f"CAP_{name}" for name in settings.get("drop", [])}
    capabilities = (
        [] if "CAP_ALL" in drop else [cap for cap in DEFAULT_CAPABILITIES if cap not in drop]
    )
    for name in settings.get("add", []):
        if f"CAP_{name}" not in capabilities:
            capabilities.append(f"CAP_{name}")
    return capabilities


def _volume_mounts(pod_spec: dict, container: dict, node_root: Path) -> list[dict]:
    volumes = {volume["name"]: volume for volume in pod_spec.get("volumes", [])}
    mounts = []
    for volume_mount in container.get("volumeMounts", []):
        volume = volumes[volume_mount["name"]]
        if "hostPath" not in volume:
            raise ValueError(f"volume {volume['name']}: only hostPath volumes are covered")
        host_path = volume["hostPath"]["path"]
        source = node_root / host_path.lstrip("/")
        kind = volume["hostPath"].get("type", "")
        if kind == "DirectoryOrCreate":
            source.mkdir(parents=True, exist_ok=True)
        elif kind == "Directory" and not source.is_dir():
            raise FileNotFoundError(
                f"hostPath {host_path} (type Directory) is missing on the test node"
            )
        mounts.append(
            {
                "destination": volume_mount["mountPath"],
                "type": "bind",
                "source": str(source),
                "options": ["rbind", "rprivate", "ro" if volume_mount.get("readOnly") else "rw"],
            }
        )
    return mounts


def _resources(resources: dict) -> dict:
    limits = resources.get("limits", {})
    requests = resources.get("requests", {})
    linux: dict = {}
    if "memory" in limits:
        linux["memory"] = {"limit": int(parse_quantity(limits["memory"]))}
    cpu: dict = {}
    if "cpu" in limits:
        cpu["quota"] = int(parse_quantity(limits["cpu"]) * CPU_PERIOD_US)
        cpu["period"] = CPU_PERIOD_US
    if "cpu" in requests:
        cpu["shares"] = max(2, int(parse_quantity(requests["cpu"]) * 1024))
    if cpu:
        linux["cpu"] = cpu
    return linux


def parse_quantity(value) -> float:
    """Parses a Kubernetes quantity such as `64Mi`, `100m` or `1`; returns bytes or cores."""
    text = str(value)
    binary = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    decimal = {"k": 10**3, "M": 10**6, "G": 10**9, "m": 10**-3}
    for suffix, factor in binary.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    for suffix, factor in decimal.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor
    return float(text)
