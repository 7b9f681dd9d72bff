"""Errors of the Berth client: one class per gRPC status, all `BerthError`."""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc


class BerthError(Exception):
    """An error the agent returned (or the transport met), with its gRPC status.

    `code` is the `grpc.StatusCode`, `details` the agent's message.
    """

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: Optional[grpc.StatusCode] = None) -> None:
        super().__init__(details)
        self.details = details
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details}"


class Cancelled(BerthError):
    code = grpc.StatusCode.CANCELLED


class InvalidArgument(BerthError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(BerthError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(BerthError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(BerthError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(BerthError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(BerthError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(BerthError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(BerthError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(BerthError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(BerthError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(BerthError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(BerthError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(BerthError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(BerthError):
    code = grpc.StatusCode.UNAUTHENTICATED


class ContainerError(BerthError):
    """`containers.run` without `detach`: the command exited non-zero.

    `exit_status` is its exit code, `output` what it printed (as `run`
    would have returned it), `container` the container (already removed when
    `remove=True`).
    """

    def __init__(self, container, exit_status: int, command, image: str, output: bytes) -> None:
        tail = output.decode(errors="replace").strip().splitlines()[-1:] if output else []
        super().__init__(
            f"command {command!r} in image {image!r} returned non-zero exit status {exit_status}"
            + (f": {tail[0]}" if tail else ""),
            grpc.StatusCode.UNKNOWN,
        )
        self.container = container
        self.exit_status = exit_status
        self.command = command
        self.image = image
        self.output = output


_BY_CODE: Dict[grpc.StatusCode, Type[BerthError]] = {
    c.code: c
    for c in (
        Cancelled,
        InvalidArgument,
        DeadlineExceeded,
        NotFound,
        AlreadyExists,
        PermissionDenied,
        ResourceExhausted,
        FailedPrecondition,
        Aborted,
        OutOfRange,
        Unimplemented,
        Internal,
        Unavailable,
        DataLoss,
        Unauthenticated,
    )
}


def from_rpc_error(e: grpc.RpcError) -> BerthError:
    """The `BerthError` subclass of a gRPC error's status."""
    code = e.code() if hasattr(e, "code") else grpc.StatusCode.UNKNOWN
    details = (e.details() if hasattr(e, "details") else None) or str(e)
    cls = _BY_CODE.get(code, BerthError)
    err = cls(details, code)
    return err
