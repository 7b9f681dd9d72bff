"""Berth's Python client.

    import berth

    client = berth.connect()                  # $BERTH_ADDRESS or /run/berth/berthd.sock
    client.images.load("busybox.tar")
    print(client.containers.run("busybox", ["echo", "hi"], remove=True))

The generated stubs are in `berth.v1` (`client.api` holds one per service).
"""

from .client import DEFAULT_ADDRESS, DEFAULT_NAMESPACE, NAMESPACE_HEADER, Api, Client, Event, Stream, connect
from .containers import Container, ContainerCollection, ExecResult, WaitResult
from .errors import (
    Aborted,
    AlreadyExists,
    BerthError,
    Cancelled,
    ContainerError,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from .images import Image, ImageCollection

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ADDRESS",
    "DEFAULT_NAMESPACE",
    "NAMESPACE_HEADER",
    "Aborted",
    "AlreadyExists",
    "Api",
    "BerthError",
    "Cancelled",
    "Client",
    "Container",
    "ContainerCollection",
    "ContainerError",
    "DataLoss",
    "DeadlineExceeded",
    "Event",
    "ExecResult",
    "FailedPrecondition",
    "Image",
    "ImageCollection",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Stream",
    "Unauthenticated",
    "Unavailable",
    "Unimplemented",
    "WaitResult",
    "connect",
]
