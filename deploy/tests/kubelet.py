"""A stand-in kubelet for the container tests: the Registration server and the device manager's
side of each registered plugin.

Like the kubelet's device manager, it handles Register by dialing the plugin back at
`<plugin-dir>/<endpoint>` and calling GetDevicePluginOptions, and returns from Register only
once that call succeeded. It then opens ListAndWatch and keeps every device list it receives.
"""

from __future__ import annotations

import dataclasses
import importlib
import queue
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_tools import protoc

API_VERSION = "v1beta1"
KUBELET_SOCKET = "kubelet.sock"
# The plugin gives up on Register after 5 seconds, so a slower dial-back is useless.
DIAL_BACK_TIMEOUT_S = 5.0


def load_api(proto_dir: Path, out_dir: Path):
    """Compile the device-plugin API from `proto_dir/api.proto` into `out_dir` and import it.

    Returns the `(api_pb2, api_pb2_grpc)` modules.
    """
    status = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            str(proto_dir / "api.proto"),
        ]
    )
    if status != 0:
        raise RuntimeError(f"protoc failed with status {status} on {proto_dir / 'api.proto'}")
    sys.path.insert(0, str(out_dir))
    return importlib.import_module("api_pb2"), importlib.import_module("api_pb2_grpc")


@dataclasses.dataclass
class Registration:
    """One accepted Register call and the options the plugin returned when dialed back."""

    request: object
    options: object


class StandInKubelet:
    """Serves Registration on `<plugin_dir>/kubelet.sock` until `stop()`."""

    def __init__(self, plugin_dir: Path, api_pb2, api_pb2_grpc):
        self.plugin_dir = plugin_dir
        self.pb2 = api_pb2
        self.pb2_grpc = api_pb2_grpc
        self.registrations: queue.Queue[Registration] = queue.Queue()
        self.device_lists: queue.Queue[object] = queue.Queue()
        self.errors: queue.Queue[str] = queue.Queue()
        self._streams: list[grpc.Future] = []
        self._channels: list[grpc.Channel] = []
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self.pb2_grpc.add_RegistrationServicer_to_server(_RegistrationServicer(self), self._server)
        self.socket = plugin_dir / KUBELET_SOCKET
        if self._server.add_insecure_port(f"unix:{self.socket}") == 0:
            raise RuntimeError(f"failed to listen on {self.socket}")

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        with self._lock:
            for stream in self._streams:
                stream.cancel()
            for channel in self._channels:
                channel.close()
        self._server.stop(grace=None).wait()

    def plugin_stub(self, endpoint: str):
        """Returns a DevicePlugin client for `<plugin_dir>/<endpoint>`, closed by `stop()`."""
        channel = grpc.insecure_channel(f"unix:{self.plugin_dir / endpoint}")
        with self._lock:
            self._channels.append(channel)
        return self.pb2_grpc.DevicePluginStub(channel)

    def next_registration(self, timeout_s: float) -> Registration:
        """Waits for the next accepted Register call; raises `queue.Empty` after `timeout_s`."""
        return self.registrations.get(timeout=timeout_s)

    def next_device_list(self, timeout_s: float):
        """Waits for the next ListAndWatch response; raises `queue.Empty` after `timeout_s`."""
        return self.device_lists.get(timeout=timeout_s)

    def _register(self, request, context):
        if request.version != API_VERSION:
            message = f"unsupported API version {request.version!r}, expected {API_VERSION!r}"
            self.errors.put(message)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        stub = self.plugin_stub(request.endpoint)
        try:
            options = stub.GetDevicePluginOptions(
                self.pb2.Empty(), timeout=DIAL_BACK_TIMEOUT_S, wait_for_ready=True
            )
        except grpc.RpcError as error:
            message = f"dial-back to {request.endpoint} failed: {error.code()} {error.details()}"
            self.errors.put(message)
            context.abort(grpc.StatusCode.UNAVAILABLE, message)
        stream = stub.ListAndWatch(self.pb2.Empty())
        with self._lock:
            self._streams.append(stream)
        threading.Thread(
            target=self._read_stream, args=(stream,), name=f"list-{request.endpoint}", daemon=True
        ).start()
        self.registrations.put(Registration(request=request, options=options))
        return self.pb2.Empty()

    def _read_stream(self, stream) -> None:
        try:
            for response in stream:
                self.device_lists.put(response)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.errors.put(f"ListAndWatch ended: {error.code()} {error.details()}")


class _RegistrationServicer:
    def __init__(self, kubelet: StandInKubelet):
        self._kubelet = kubelet

    def Register(self, request, context):  # noqa: N802 - the gRPC method name
        return self._kubelet._register(request, context)
