"""Runs containers with runc from bundles in a temporary directory, and removes them again."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path


class Container:
    """A container started with `runc run` in the foreground; runc exits with its status."""

    def __init__(self, runtime: Runtime, container_id: str, process: subprocess.Popen, log: Path):
        self.runtime = runtime
        self.id = container_id
        self.process = process
        self.log = log

    def wait(self, timeout_s: float) -> int:
        """Waits for the container to exit; returns its exit status."""
        return self.process.wait(timeout=timeout_s)

    def output(self) -> str:
        """Returns what the container wrote to stdout and stderr so far."""
        return self.log.read_text(errors="replace")

    def exec(self, args: list[str], timeout_s: float = 10.0) -> subprocess.CompletedProcess:
        """Runs `args` in the running container, as a kubelet exec probe does."""
        return self.runtime.runc(["exec", self.id, *args], timeout_s=timeout_s, check=False)

    def kill(self, signal: str) -> None:
        self.runtime.runc(["kill", self.id, signal], timeout_s=10.0, check=True)

    def pid(self) -> int:
        """Returns the host PID of the container's first process."""
        state = self.runtime.runc(["state", self.id], timeout_s=10.0, check=True)
        return int(json.loads(state.stdout)["pid"])


class Runtime:
    """runc with its own state directory, so that `cleanup()` finds exactly the containers
    these tests started."""

    def __init__(self, state_dir: Path, work_dir: Path):
        self.state_dir = state_dir
        self.work_dir = work_dir
        self.containers: list[Container] = []

    def runc(
        self, args: list[str], *, timeout_s: float, check: bool
    ) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["runc", "--root", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=check,
        )

    def write_bundle(self, container_id: str, spec: dict) -> Path:
        bundle = self.work_dir / f"bundle-{container_id}"
        bundle.mkdir()
        (bundle / "config.json").write_text(json.dumps(spec, indent=1))
        return bundle

    def start(self, container_id: str, spec: dict) -> Container:
        """Starts a container from `spec`; its output goes to a log file in the work dir."""
        bundle = self.write_bundle(container_id, spec)
        log = self.work_dir / f"{container_id}.log"
        with open(log, "wb") as stream:
            process = subprocess.Popen(
                [
                    "runc",
                    "--root",
                    str(self.state_dir),
                    "run",
                    "--bundle",
                    str(bundle),
                    container_id,
                ],
                stdin=subprocess.DEVNULL,
                stdout=stream,
                stderr=subprocess.STDOUT,
            )
        container = Container(self, container_id, process, log)
        self.containers.append(container)
        return container

    def run(self, container_id: str, spec: dict, timeout_s: float = 20.0) -> tuple[int, str]:
        """Runs a container to completion; returns its exit status and output."""
        container = self.start(container_id, spec)
        status = container.wait(timeout_s)
        return status, container.output()

    def wait_running(self, container: Container, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            state = self.runc(["state", container.id], timeout_s=10.0, check=False)
            if state.returncode == 0 and json.loads(state.stdout)["status"] == "running":
                return
            if container.process.poll() is not None:
                raise AssertionError(
                    f"container {container.id} exited early:\n{container.output()}"
                )
            time.sleep(0.05)
        raise AssertionError(f"container {container.id} is not running after {timeout_s} s")

    def cleanup(self) -> None:
        """Kills and deletes every container in the state directory."""
        listing = self.runc(["list", "--format", "json"], timeout_s=10.0, check=False)
        ids = [item["id"] for item in json.loads(listing.stdout or "null") or []]
        for container_id in ids:
            self.runc(["delete", "--force", container_id], timeout_s=10.0, check=False)
        for container in self.containers:
            if container.process.poll() is None:
                container.process.kill()
                container.process.wait(timeout=10)
