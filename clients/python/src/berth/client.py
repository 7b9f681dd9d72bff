"""The connection to an agent: `connect()`, the generated stubs, and how
every call is made (namespace header, deadline, errors)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import grpc
from google.protobuf import timestamp_pb2

from . import errors
from .v1 import (
    build_pb2_grpc,
    containers_pb2_grpc,
    content_pb2_grpc,
    events_pb2,
    events_pb2_grpc,
    images_pb2_grpc,
    networks_pb2_grpc,
    registry_pb2_grpc,
    snapshots_pb2_grpc,
    tasks_pb2_grpc,
    version_pb2,
    version_pb2_grpc,
    volumes_pb2_grpc,
)

DEFAULT_ADDRESS = "/run/berth/berthd.sock"
DEFAULT_NAMESPACE = "default"
NAMESPACE_HEADER = "berth-namespace"
# Replies such as a list of many containers can be large.
_MAX_MESSAGE = 64 << 20

Filters = Union[None, Sequence[str], Dict[str, Any]]


def filter_list(filters: Filters) -> List[str]:
    """The API's filter strings: a list is taken as it is ("name==x",
    "label.k"), a dict's items become "key==value" ("key" for True)."""
    if filters is None:
        return []
    if isinstance(filters, dict):
        out = []
        for k, v in filters.items():
            for one in v if isinstance(v, (list, tuple)) else [v]:
                out.append(k if one is True else f"{k}=={one}")
        return out
    if isinstance(filters, str):
        return [filters]
    return list(filters)


def to_datetime(ts: timestamp_pb2.Timestamp) -> Optional[datetime.datetime]:
    """A timestamp as an aware UTC datetime; None when unset."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=datetime.timezone.utc)


class Api:
    """The generated stubs, one per service (`client.api.containers.List(...)`).

    Pass `metadata=client.metadata` to a call to give it the client's namespace.
    """

    def __init__(self, channel: grpc.Channel) -> None:
        self.images = images_pb2_grpc.ImagesStub(channel)
        self.registry = registry_pb2_grpc.RegistryStub(channel)
        self.content = content_pb2_grpc.ContentStub(channel)
        self.snapshots = snapshots_pb2_grpc.SnapshotsStub(channel)
        self.containers = containers_pb2_grpc.ContainersStub(channel)
        self.tasks = tasks_pb2_grpc.TasksStub(channel)
        self.events = events_pb2_grpc.EventsStub(channel)
        self.networks = networks_pb2_grpc.NetworksStub(channel)
        self.volumes = volumes_pb2_grpc.VolumesStub(channel)
        self.builder = build_pb2_grpc.BuilderStub(channel)
        self.version = version_pb2_grpc.VersionStub(channel)


class Stream(Iterator[Any]):
    """The responses of a streaming call, converted by `convert`; errors
    raise `BerthError`. `close()` (or leaving a `with` block) cancels the call."""

    def __init__(self, call: Any, convert: Callable[[Any], Any] = lambda m: m) -> None:
        self._call = call
        self._convert = convert

    def __iter__(self) -> "Stream":
        return self

    def __next__(self) -> Any:
        try:
            return self._convert(next(self._call))
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.CANCELLED and self._call.cancelled():
                raise StopIteration from None
            raise errors.from_rpc_error(e) from None

    def wait_ready(self) -> None:
        """Wait for the agent's response headers (an error shows on the
        first read)."""
        try:
            self._call.initial_metadata()
        except grpc.RpcError:
            pass

    def close(self) -> None:
        self._call.cancel()

    def __enter__(self) -> "Stream":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


@dataclass(frozen=True)
class Event:
    """One event: `topic` ("/tasks/exit"), `id` (a container id or an image
    name), `namespace`, `timestamp`, and `attributes` ("exit_code", ...)."""

    topic: str
    id: str
    namespace: str
    timestamp: Optional[datetime.datetime]
    attributes: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_proto(cls, m: events_pb2.Envelope) -> "Event":
        return cls(m.topic, m.id, m.namespace, to_datetime(m.timestamp), dict(m.attributes))


class Client:
    """A connection to one agent. Use `berth.connect()` to make one.

    `images`, `containers` and `volumes` are the collections; `api` the generated stubs
    for everything else. A client is a context manager and closes its channel.
    """

    def __init__(self, address: Optional[str] = None, namespace: Optional[str] = None, timeout: float = 60.0) -> None:
        from .containers import ContainerCollection
        from .images import ImageCollection
        from .volumes import VolumeCollection

        self.address = address or os.environ.get("BERTH_ADDRESS") or DEFAULT_ADDRESS
        self.namespace = namespace or os.environ.get("BERTH_NAMESPACE") or DEFAULT_NAMESPACE
        #: Deadline in seconds of each call that is not a stream.
        self.timeout = timeout
        #: The metadata every call carries: the namespace header.
        self.metadata: Tuple[Tuple[str, str], ...] = ((NAMESPACE_HEADER, self.namespace),)
        self._channel = grpc.insecure_channel(
            _target(self.address),
            options=[("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)],
        )
        self.api = Api(self._channel)
        self.images = ImageCollection(self)
        self.containers = ContainerCollection(self)
        self.volumes = VolumeCollection(self)

    def __repr__(self) -> str:
        return f"<berth.Client {self.address} namespace={self.namespace}>"

    # Calls -----------------------------------------------------------------

    def call(self, method: Callable[..., Any], request: Any, timeout: Optional[float] = None) -> Any:
        """Make a unary call with the namespace and a deadline; errors raise `BerthError`."""
        try:
            return method(request, metadata=self.metadata, timeout=timeout or self.timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None

    def stream(
        self,
        method: Callable[..., Any],
        request: Any,
        convert: Callable[[Any], Any] = lambda m: m,
        timeout: Optional[float] = None,
    ) -> Stream:
        """Start a streaming call (no deadline unless `timeout`)."""
        try:
            call = method(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from None
        return Stream(call, convert)

    # The agent -------------------------------------------------------------

    def version(self) -> Dict[str, str]:
        """The agent's version: {"version", "revision", "api_version"}."""
        v = self.call(self.api.version.Version, version_pb2.VersionRequest()).version
        return {"version": v.version, "revision": v.revision, "api_version": v.api_version}

    def info(self) -> version_pb2.InfoResponse:
        """The agent's configuration and counts (`berthctl info`)."""
        return self.call(self.api.version.Info, version_pb2.InfoRequest())

    def ping(self) -> bool:
        """True when the agent answers."""
        self.version()
        return True

    def events(self, filters: Filters = None) -> Stream:
        """Every event published after this call returns, as `Event`s,
        until `close()` (or the end of a `with` block).

        A filter is "topic==/tasks/exit", "topic~=/tasks/", "id==ID" or
        several of those joined by commas (all must hold); an event passes
        when any filter does.
        """
        req = events_pb2.SubscribeRequest(filters=filter_list(filters))
        events = self.stream(self.api.events.Subscribe, req, Event.from_proto)
        # The agent sends its headers once the subscription is in place: from
        # the return of this call on, no event is missed.
        events.wait_ready()
        return events

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _target(address: str) -> str:
    if address.startswith("unix:"):
        return address
    return "unix://" + os.path.abspath(address)


def connect(address: Optional[str] = None, namespace: Optional[str] = None, timeout: float = 60.0) -> Client:
    """Connect to an agent.

    `address` is the agent's Unix socket (a path, or "unix:///path"); by
    default `$BERTH_ADDRESS`, else /run/berth/berthd.sock. `namespace` is the
    namespace of every call; by default `$BERTH_NAMESPACE`, else "default".
    `timeout` bounds each call that is not a stream, in seconds.
    The connection is made on the first call.
    """
    return Client(address, namespace, timeout)

