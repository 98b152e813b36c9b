"""Fixtures for the container tests: the image, the rendered manifests, a node laid out in a
temporary directory, the stand-in kubelet and tun-manager running under runc.

scripts/deploy-test builds the image and renders the manifests, then runs pytest with
TUN_MANAGER_IMAGE_LAYOUT (an OCI image layout whose reference `tun-manager` is the image) and
TUN_MANAGER_RENDERED (a directory with plugin.yaml and examples.yaml from kustomize v5.5.0).
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import yaml

import cri
from kubelet import StandInKubelet, load_api
from runc import Container, Runtime

REPO = Path(__file__).resolve().parents[2]
# How long any wait on the daemon or a container lasts before a test fails.
TIMEOUT_S = 20.0
TUN_MAJOR, TUN_MINOR = 10, 200
# The busybox applets that the example pods' shell scripts and the tests call; sh is dash.
BUSYBOX_APPLETS = ["test", "ls", "mkdir", "mknod", "sleep", "cat"]


def _required_path(variable: str) -> Path:
    value = os.environ.get(variable)
    if not value:
        pytest.fail(
            f"{variable} is not set; run these tests through scripts/deploy-test", pytrace=False
        )
    return Path(value)


@pytest.fixture(scope="session")
def work_dir():
    path = Path(tempfile.mkdtemp(prefix="tmdt-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def api(work_dir):
    out = work_dir / "api"
    out.mkdir()
    return load_api(REPO / "proto", out)


@pytest.fixture(scope="session")
def manifests():
    rendered = _required_path("TUN_MANAGER_RENDERED")
    documents = []
    for name in ("plugin.yaml", "examples.yaml"):
        documents += [doc for doc in yaml.safe_load_all((rendered / name).read_text()) if doc]
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in documents}


@pytest.fixture(scope="session")
def daemonset(manifests):
    return manifests[("DaemonSet", "tun-manager")]


@pytest.fixture(scope="session")
def runtime(work_dir):
    state = work_dir / "runc-state"
    state.mkdir()
    runtime = Runtime(state, work_dir)
    yield runtime
    runtime.cleanup()


@dataclasses.dataclass
class Image:
    """An image unpacked by umoci: its root file system and its configured process."""

    rootfs: Path
    entrypoint: list[str]
    env: list[str]


@pytest.fixture(scope="session")
def plugin_image(work_dir) -> Image:
    layout = _required_path("TUN_MANAGER_IMAGE_LAYOUT")
    bundle = work_dir / "tun-manager-image"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:tun-manager", str(bundle)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    config = json.loads((bundle / "config.json").read_text())
    return Image(
        rootfs=bundle / "rootfs", entrypoint=config["process"]["args"], env=config["process"]["env"]
    )


@pytest.fixture(scope="session")
def tools_rootfs(work_dir) -> Path:
    """A small image for the tun users: dash as /bin/sh, busybox from Debian's busybox-static
    for the other commands, and `ip` from iproute2, because busybox's ip has no `tuntap`. The
    shell is not busybox because Debian's busybox sh runs its own applets, its ip among them,
    before it searches PATH."""
    rootfs = work_dir / "tools-rootfs"
    (rootfs / "bin").mkdir(parents=True)
    shutil.copy2("/bin/busybox", rootfs / "bin/busybox")
    for applet in BUSYBOX_APPLETS:
        (rootfs / "bin" / applet).symlink_to("busybox")
    _copy_with_libraries(Path("/bin/dash"), rootfs)
    (rootfs / "bin/sh").symlink_to("dash")
    _copy_with_libraries(Path("/usr/bin/ip"), rootfs)
    return rootfs


def _copy_with_libraries(binary: Path, rootfs: Path) -> None:
    listing = subprocess.run(
        ["ldd", str(binary)], check=True, capture_output=True, text=True
    ).stdout
    paths = [binary]
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) >= 3 and fields[1] == "=>" and fields[2].startswith("/"):
            paths.append(Path(fields[2]))
        elif fields and fields[0].startswith("/"):
            paths.append(Path(fields[0]))
    for path in paths:
        target = rootfs / str(path).lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(path.resolve(), target)


@pytest.fixture
def node_root(work_dir) -> Path:
    """A node's files in a temporary directory: the kubelet's empty device-plugin directory and
    /dev/net/tun, a character device 10:200 with the usual host mode 0666."""
    root = Path(tempfile.mkdtemp(prefix="node", dir=work_dir))
    (root / "var/lib/kubelet/device-plugins").mkdir(parents=True)
    (root / "dev/net").mkdir(parents=True)
    os.mknod(root / "dev/net/tun", 0o666 | 0o020000, os.makedev(TUN_MAJOR, TUN_MINOR))
    os.chmod(root / "dev/net/tun", 0o666)
    return root


# Prefix of every container, cgroup and network namespace name, so that scripts/deploy-test
# can remove what a killed run left behind.
RUN_PREFIX = f"tmdt-{os.environ.get('TUN_MANAGER_TEST_RUN_ID', os.getpid())}-"


def unique_id(name: str) -> str:
    return f"{RUN_PREFIX}{name}-{uuid.uuid4().hex[:6]}"


def cgroups_path(container_id: str) -> str:
    return f"/{container_id}"


@dataclasses.dataclass
class Plugin:
    """tun-manager running in a container from the DaemonSet's pod spec, registered with a
    stand-in kubelet."""

    container: Container
    kubelet: StandInKubelet
    node_root: Path
    cgroups_path: str
    pod_spec: dict
    spec: dict

    @property
    def plugin_dir(self) -> Path:
        return self.node_root / "var/lib/kubelet/device-plugins"

    def wait_registered(self):
        """Waits for the stand-in kubelet to accept a registration; fails the test with the
        daemon's log if the container exits or nothing registers in time."""
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                return self.kubelet.next_registration(0.1)
            except queue.Empty:
                if self.container.process.poll() is not None:
                    break
        errors = list(self.kubelet.errors.queue)
        pytest.fail(
            f"tun-manager did not register within {TIMEOUT_S} s (kubelet errors: {errors}); "
            f"container output:\n{self.container.output()}"
        )


@pytest.fixture
def start_plugin(api, daemonset, plugin_image, runtime, node_root):
    """Returns a function that starts tun-manager as the DaemonSet runs it and waits for the
    stand-in kubelet to accept its registration."""
    started = []

    def start() -> Plugin:
        pod_spec = daemonset["spec"]["template"]["spec"]
        container_spec = pod_spec["containers"][0]
        kubelet = StandInKubelet(node_root / "var/lib/kubelet/device-plugins", *api)
        kubelet.start()
        container_id = unique_id("plugin")
        spec = cri.container_spec(
            rootfs=plugin_image.rootfs,
            pod_spec=pod_spec,
            container=container_spec,
            node_root=node_root,
            cgroups_path=cgroups_path(container_id),
            image_entrypoint=plugin_image.entrypoint,
            image_env=plugin_image.env,
        )
        container = runtime.start(container_id, spec)
        plugin = Plugin(container, kubelet, node_root, cgroups_path(container_id), pod_spec, spec)
        started.append(plugin)
        return plugin

    yield start
    for plugin in started:
        if plugin.container.process.poll() is None:
            plugin.container.kill("KILL")
            plugin.container.wait(TIMEOUT_S)
        plugin.kubelet.stop()


@pytest.fixture
def netns():
    """Returns a function that creates a named network namespace; all are deleted afterwards."""
    created = []

    def create(name: str) -> str:
        namespace = unique_id(name)
        subprocess.run(["ip", "netns", "add", namespace], check=True, capture_output=True)
        created.append(namespace)
        return namespace

    yield create
    for namespace in created:
        subprocess.run(["ip", "netns", "delete", namespace], check=False, capture_output=True)
