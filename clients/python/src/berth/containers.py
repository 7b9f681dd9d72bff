"""Containers: `client.containers` and the `Container` objects it returns."""

from __future__ import annotations

import datetime
import io
import shlex
from typing import IO, TYPE_CHECKING, Any, Dict, Iterator, List, Literal, NamedTuple, Optional, Sequence, Tuple, Union, overload

from .client import Filters, Stream, filter_list, to_datetime
from .errors import ContainerError
from .v1 import containers_pb2, tasks_pb2

if TYPE_CHECKING:
    from .client import Client
    from .images import Image

Command = Union[None, str, Sequence[str]]
Environment = Union[None, Dict[str, str], Sequence[str]]


class ExecResult(NamedTuple):
    """What `exec_run` returns: the exit code and the output."""

    exit_code: int
    output: bytes


class WaitResult(NamedTuple):
    """What `wait` and `stop` return: the exit code and when it exited."""

    exit_code: int
    exited_at: Optional[datetime.datetime]


class Container:
    """A container record and, while it runs, its task."""

    def __init__(self, client: "Client", attrs: containers_pb2.Container) -> None:
        self.client = client
        #: The `berth.v1.Container` message the agent sent.
        self.attrs = attrs

    @property
    def id(self) -> str:
        return self.attrs.id

    @property
    def short_id(self) -> str:
        return self.attrs.id[:12]

    @property
    def name(self) -> str:
        return self.attrs.name

    @property
    def image(self) -> str:
        """The image's name as given at create time."""
        return self.attrs.image

    @property
    def labels(self) -> Dict[str, str]:
        return dict(self.attrs.labels)

    @property
    def status(self) -> str:
        """"created", "running", "paused", "exited" or "unknown" (as of the last reload)."""
        return self.attrs.status.state

    @property
    def restart_count(self) -> int:
        """Times its restart policy started it again (as of the last reload)."""
        return self.attrs.restart_count

    @property
    def exit_code(self) -> Optional[int]:
        """The exit code once exited (as of the last reload)."""
        return self.attrs.status.exit_code if self.status == "exited" else None

    def reload(self) -> "Container":
        """Ask the agent again for this container's record and state."""
        self.attrs = self.client.containers.get(self.id).attrs
        return self

    def _tasks(self) -> Any:
        return self.client.api.tasks

    def start(self) -> int:
        """Start the container's main process; returns its pid."""
        return self.client.call(self._tasks().Start, tasks_pb2.StartTaskRequest(container_id=self.id)).pid

    def stop(self, timeout: Optional[int] = None) -> WaitResult:
        """The stop signal, then SIGKILL after `timeout` seconds (10 by default)."""
        req = tasks_pb2.StopTaskRequest(container_id=self.id, timeout_secs=timeout or 0, timeout_set=timeout is not None)
        # The agent waits the container's own stop timeout when none is given.
        own = self.attrs.config.stop_timeout if self.attrs.config.HasField("stop_timeout") else 10
        call_timeout = max(self.client.timeout, (timeout if timeout is not None else own) + 30)
        r = self.client.call(self._tasks().Stop, req, timeout=call_timeout)
        return WaitResult(r.exit_code, to_datetime(r.exited_at))

    def kill(self, signal: Union[str, int, None] = None, all: bool = False) -> None:
        """Send a signal (a name such as "TERM" or a number; SIGKILL by default, as docker)."""
        req = tasks_pb2.KillTaskRequest(container_id=self.id, signal="KILL" if signal is None else str(signal), all=all)
        self.client.call(self._tasks().Kill, req)

    def wait(self, timeout: Optional[float] = None) -> WaitResult:
        """Wait for the main process to exit (at most `timeout` seconds:
        `DeadlineExceeded` then)."""
        req = tasks_pb2.WaitTaskRequest(container_id=self.id, timeout_ms=int(timeout * 1000) if timeout else 0)
        r = self.client.call(self._tasks().Wait, req, timeout=(timeout + 30) if timeout else 24 * 3600)
        return WaitResult(r.exit_code, to_datetime(r.exited_at))

    @overload
    def logs(
        self,
        stdout: bool = ...,
        stderr: bool = ...,
        stream: Literal[False] = ...,
        follow: bool = ...,
        tail: Union[int, str, None] = ...,
        since: Optional[datetime.datetime] = ...,
        until: Optional[datetime.datetime] = ...,
    ) -> bytes: ...

    @overload
    def logs(
        self,
        stdout: bool = ...,
        stderr: bool = ...,
        *,
        stream: Literal[True],
        follow: bool = ...,
        tail: Union[int, str, None] = ...,
        since: Optional[datetime.datetime] = ...,
        until: Optional[datetime.datetime] = ...,
    ) -> Iterator[bytes]: ...

    def logs(
        self,
        stdout: bool = True,
        stderr: bool = True,
        stream: bool = False,
        follow: bool = False,
        tail: Union[int, str, None] = None,
        since: Optional[datetime.datetime] = None,
        until: Optional[datetime.datetime] = None,
    ) -> Union[bytes, Iterator[bytes]]:
        """The container's output. With `stream=True`, an iterator of chunks
        (with `follow=True` it goes on until the container exits); otherwise
        all the bytes. `tail` keeps the last N lines ("all": every line)."""
        req = containers_pb2.LogsRequest(id=self.id, follow=follow, stdout=stdout, stderr=stderr)
        if not stdout and not stderr:
            return iter(()) if stream else b""
        if tail is not None and tail != "all":
            req.tail, req.tail_set = int(tail), True
        if since is not None:
            req.since.FromDatetime(since)
        if until is not None:
            req.until.FromDatetime(until)
        chunks = self.client.stream(self.client.api.containers.Logs, req, lambda m: m.data)
        if stream:
            return chunks
        with chunks:
            return b"".join(chunks)

    def exec_run(
        self,
        cmd: Command,
        stdout: bool = True,
        stderr: bool = True,
        user: str = "",
        environment: Environment = None,
        workdir: str = "",
        tty: bool = False,
    ) -> ExecResult:
        """Run a command in the running container and wait for it: returns
        `(exit_code, output)`."""
        req = tasks_pb2.ExecRequest(
            container_id=self.id,
            args=_command(cmd) or [],
            env=_environment(environment),
            workdir=workdir,
            user=user,
            tty=tty,
        )
        exec_id = self.client.call(self._tasks().Exec, req).exec_id
        code, output = _run_attached(self.client, self.id, exec_id, stdout, stderr)
        return ExecResult(code, output)

    def pause(self) -> None:
        self.client.call(self._tasks().Pause, tasks_pb2.PauseTaskRequest(container_id=self.id))

    def unpause(self) -> None:
        self.client.call(self._tasks().Resume, tasks_pb2.ResumeTaskRequest(container_id=self.id))

    def stats(self) -> tasks_pb2.StatsResponse:
        """CPU, memory and pids usage of the running container."""
        return self.client.call(self._tasks().Stats, tasks_pb2.StatsRequest(container_id=self.id))

    def top(self) -> List[tasks_pb2.ProcessInfo]:
        """The container's processes."""
        return list(self.client.call(self._tasks().ListPids, tasks_pb2.ListPidsRequest(container_id=self.id)).processes)

    def diff(self) -> List[Dict[str, str]]:
        """Changes in the writable layer: [{"Kind": "A"|"C"|"D", "Path": ...}]."""
        r = self.client.call(self.client.api.containers.Diff, containers_pb2.DiffRequest(id=self.id))
        return [{"Kind": c.kind, "Path": c.path} for c in r.changes]

    def commit(self, reference: str, message: str = "", author: str = "", pause: bool = True) -> "Image":
        """Store the writable layer as a new image named `reference`."""
        req = containers_pb2.CommitRequest(id=self.id, reference=reference, message=message, author=author, no_pause=not pause)
        r = self.client.call(self.client.api.containers.Commit, req, timeout=max(self.client.timeout, 600))
        return self.client.images.get(r.name)

    def get_archive(self, path: str, follow_link: bool = False) -> Tuple[Iterator[bytes], Dict[str, Any]]:
        """A file or directory tree of the container (running or not) as an uncompressed
        tar stream, and what is at `path`: (an iterator of the stream's chunks, {"name",
        "size", "mode", "mtime", "linkTarget"}), as the Docker SDK returns them. The
        archive's top entry is the path's last component."""
        api = self.client.api.containers
        st = self.client.call(api.StatPath, containers_pb2.StatPathRequest(id=self.id, path=path, follow_link=follow_link)).stat
        chunks = self.client.stream(
            api.CopyFrom, containers_pb2.CopyFromRequest(id=self.id, path=path, follow_link=follow_link), lambda m: m.data
        )
        stat = {"name": st.name, "size": st.size, "mode": st.mode, "mtime": to_datetime(st.modified), "linkTarget": st.link_target}
        return chunks, stat

    def put_archive(self, path: str, data: Union[bytes, IO[bytes]], keep_owners: bool = False) -> bool:
        """Extract a tar archive (its bytes, or a binary file object) into the directory
        `path` of the container (running or not). The whole archive is received and
        checked before anything is written; entries are owned by the container's root
        unless `keep_owners`."""
        stream: IO[bytes] = io.BytesIO(data) if isinstance(data, bytes) else data
        options = containers_pb2.CopyToOptions(id=self.id, path=path, keep_owners=keep_owners)

        def requests() -> Iterator[containers_pb2.CopyToRequest]:
            yield containers_pb2.CopyToRequest(options=options)
            while True:
                chunk = stream.read(1 << 20)
                if not chunk:
                    return
                yield containers_pb2.CopyToRequest(chunk=chunk)

        self.client.call(self.client.api.containers.CopyTo, requests(), timeout=max(self.client.timeout, 600))
        return True

    def remove(self, force: bool = False) -> None:
        """Delete the container and its writable layer (`force` kills it first)."""
        req = containers_pb2.DeleteContainerRequest(id=self.id, force=force)
        self.client.call(self.client.api.containers.Delete, req)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Container) and other.id == self.id

    def __hash__(self) -> int:
        return hash(self.id)

    def __repr__(self) -> str:
        return f"<Container {self.short_id} {self.name}>"


class ContainerCollection:
    """`client.containers`: create, run, get, list."""

    def __init__(self, client: "Client") -> None:
        self.client = client

    def _wrap(self, m: containers_pb2.Container) -> Container:
        return Container(self.client, m)

    def create(
        self,
        image: str,
        command: Command = None,
        *,
        name: str = "",
        entrypoint: Command = None,
        environment: Environment = None,
        working_dir: str = "",
        user: str = "",
        hostname: str = "",
        network: str = "",
        labels: Optional[Dict[str, str]] = None,
        tty: bool = False,
        stdin_open: bool = False,
        auto_remove: bool = False,
        read_only: bool = False,
        privileged: bool = False,
        cap_add: Sequence[str] = (),
        cap_drop: Sequence[str] = (),
        volumes: Sequence[str] = (),
        mem_limit: int = 0,
        pids_limit: int = 0,
        runtime: str = "",
        init: bool = False,
        stop_signal: str = "",
        stop_timeout: Optional[int] = None,
        restart_policy: Optional[Dict[str, Any]] = None,
    ) -> Container:
        """Create a container from an image (not started).

        `command` and `entrypoint` replace the image's (a string is split as
        a shell would); `environment` is a dict or "KEY=VALUE" strings;
        `network` is "" (the default network), "none", "host",
        "container:NAME" or a network's name; `volumes` are bind mounts
        "/HOST:CONTAINER[:ro]" or named volumes "NAME:CONTAINER[:ro]"; `init` runs berth-init as PID 1 (it reaps
        zombies and passes signals on); `stop_signal` and `stop_timeout`
        are what `stop()` sends first and how long it waits before SIGKILL;
        `restart_policy` is docker's {"Name": "always"|"unless-stopped"|
        "on-failure", "MaximumRetryCount": N}.
        """
        config = containers_pb2.ContainerConfig(
            env=_environment(environment),
            workdir=working_dir,
            user=user,
            hostname=hostname,
            tty=tty,
            stdin=stdin_open,
            auto_remove=auto_remove,
            read_only=read_only,
            privileged=privileged,
            cap_add=list(cap_add),
            cap_drop=list(cap_drop),
            mounts=[_bind(v) for v in volumes],
            resources=containers_pb2.Resources(memory_bytes=mem_limit, pids_limit=pids_limit),
            init=init,
            stop_signal=stop_signal,
        )
        if stop_timeout is not None:
            config.stop_timeout = stop_timeout
        if restart_policy:
            config.restart_policy.name = restart_policy.get("Name", "")
            config.restart_policy.max_retries = int(restart_policy.get("MaximumRetryCount", 0))
        if network in ("", "none", "host") or network.startswith("container:"):
            config.network = network
        else:
            config.networks.append(containers_pb2.NetworkEndpoint(network=network))
        if command is not None:
            config.command.extend(_command(command))
            config.command_set = True
        if entrypoint is not None:
            config.entrypoint.extend(_command(entrypoint))
            config.entrypoint_set = True
        req = containers_pb2.CreateContainerRequest(image=image, name=name, config=config, labels=labels or {}, runtime=runtime)
        return self._wrap(self.client.call(self.client.api.containers.Create, req).container)

    @overload
    def run(
        self,
        image: str,
        command: Command = ...,
        *,
        detach: Literal[False] = ...,
        remove: bool = ...,
        stdout: bool = ...,
        stderr: bool = ...,
        **kwargs: Any,
    ) -> bytes: ...

    @overload
    def run(
        self,
        image: str,
        command: Command = ...,
        *,
        detach: Literal[True],
        remove: bool = ...,
        stdout: bool = ...,
        stderr: bool = ...,
        **kwargs: Any,
    ) -> Container: ...

    def run(
        self,
        image: str,
        command: Command = None,
        *,
        detach: bool = False,
        remove: bool = False,
        stdout: bool = True,
        stderr: bool = False,
        **kwargs: Any,
    ) -> Union[Container, bytes]:
        """Create and start a container, as `docker run`.

        With `detach=True`, return the running `Container`. Otherwise wait
        for it to exit and return its output (stdout, and stderr with
        `stderr=True`); a non-zero exit raises `ContainerError` with the exit
        status and the output. `remove=True` deletes the container once it
        has exited. Other arguments are those of `create`.
        """
        if detach and remove:
            # Detached, the agent removes it at its exit.
            kwargs["auto_remove"] = True
        container = self.create(image, command, **kwargs)
        try:
            if detach:
                container.start()
                return container
            self.client.call(self.client.api.tasks.Create, tasks_pb2.CreateTaskRequest(container_id=container.id))
            code, output = _run_attached(self.client, container.id, "", stdout, stderr)
        except BaseException:
            if remove:
                _remove_quietly(container)
            raise
        if remove:
            container.remove(force=True)
        if code != 0:
            raise ContainerError(container, code, command, image, output)
        return output

    def get(self, container_id: str) -> Container:
        """One container by name, id or unique id prefix (`NotFound` otherwise)."""
        req = containers_pb2.GetContainerRequest(id=container_id)
        return self._wrap(self.client.call(self.client.api.containers.Get, req).container)

    def list(self, all: bool = False, filters: Filters = None) -> List[Container]:
        """The running containers, or every one with `all=True`. Filters:
        "name==N", "name~=TEXT", "label.KEY==VALUE", "label.KEY",
        "status==running|created|exited|paused", "image==NAME", "id==PREFIX"
        (or a dict {"status": "exited"})."""
        f = filter_list(filters)
        req = containers_pb2.ListContainersRequest(filters=f)
        found = [self._wrap(m) for m in self.client.call(self.client.api.containers.List, req).containers]
        if all or any(x.startswith("status") for x in f):
            return found
        return [c for c in found if c.status in ("running", "paused")]


def _run_attached(client: "Client", container_id: str, exec_id: str, stdout: bool, stderr: bool) -> Tuple[int, bytes]:
    """Attach to a created process, start it, and collect its output until
    it exits: (exit code, output)."""
    first = tasks_pb2.AttachRequest(container_id=container_id, exec_id=exec_id)
    stream: Stream = client.stream(client.api.tasks.Attach, iter([first]))
    with stream:
        # The agent answers with its headers once the attach is in place:
        # from then on no output is missed.
        stream.wait_ready()
        client.call(client.api.tasks.Start, tasks_pb2.StartTaskRequest(container_id=container_id, exec_id=exec_id))
        out = []
        code = None
        for m in stream:
            if m.exited:
                code = m.exit_code
                break
            if (m.stream == "stderr" and stderr) or (m.stream != "stderr" and stdout):
                out.append(m.data)
    if code is None:
        # The stream ended without its last message: ask for the exit.
        w = client.call(client.api.tasks.Wait, tasks_pb2.WaitTaskRequest(container_id=container_id, exec_id=exec_id))
        code = w.exit_code
    return code, b"".join(out)


def _remove_quietly(container: Container) -> None:
    try:
        container.remove(force=True)
    except Exception:
        pass


def _command(cmd: Command) -> List[str]:
    if cmd is None:
        return []
    if isinstance(cmd, str):
        return shlex.split(cmd)
    return list(cmd)


def _environment(env: Environment) -> List[str]:
    if env is None:
        return []
    if isinstance(env, dict):
        return [f"{k}={v}" for k, v in env.items()]
    return list(env)


def _bind(spec: str) -> containers_pb2.ContainerMount:
    parts = spec.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        from .errors import InvalidArgument

        raise InvalidArgument(f"volume {spec!r}: expected HOST:CONTAINER[:ro] or NAME:CONTAINER[:ro]")
    # A host path (absolute) is bound; a name is a volume, made when missing.
    kind = "bind" if parts[0].startswith("/") else "volume"
    return containers_pb2.ContainerMount(
        type=kind, source=parts[0], destination=parts[1], readonly=len(parts) == 3 and parts[2] == "ro"
    )
