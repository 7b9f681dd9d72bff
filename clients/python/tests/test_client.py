"""The Python client against a real berthd (see conftest.py)."""

import io
import tarfile
import threading
import time

import pytest

import berth

from conftest import IMAGE


def test_version_and_info(client):
    v = client.version()
    assert v["api_version"] == "v1" and v["version"]
    info = client.info()
    assert info.address and info.default_runtime


def test_load_lists_the_image(client, image):
    assert image.id.startswith("sha256:") and image.digest.startswith("sha256:")
    assert image.size > 0
    names = [i.name for i in client.images.list()]
    assert IMAGE in names
    assert client.images.get("busybox") == image
    assert [i.name for i in client.images.list(filters={"name": IMAGE})] == [IMAGE]


def test_load_takes_bytes_too(client, image):
    import os

    with open(os.environ["BERTH_TEST_ARCHIVE"], "rb") as f:
        again = client.images.load(f.read())
    assert again == [image]


def test_run_returns_the_output(client, image):
    out = client.containers.run(IMAGE, ["echo", "hello from python"], remove=True, network="none")
    assert out == b"hello from python\n"


def test_run_keeps_stderr_apart(client, image):
    cmd = "sh -c 'echo out; echo err >&2'"
    assert client.containers.run(IMAGE, cmd, remove=True, network="none") == b"out\n"
    both = client.containers.run(IMAGE, cmd, remove=True, network="none", stderr=True)
    assert sorted(both.splitlines()) == [b"err", b"out"]


def test_a_failing_command_raises_container_error_with_its_status(client, image, name):
    with pytest.raises(berth.ContainerError) as e:
        client.containers.run(IMAGE, "sh -c 'echo bad; exit 3'", name=name, network="none")
    assert e.value.exit_status == 3
    assert e.value.output == b"bad\n"
    assert isinstance(e.value, berth.BerthError)
    # Without remove=True the container stays, exited.
    c = client.containers.get(name)
    assert c.status == "exited" and c.exit_code == 3
    c.remove()


def test_detached_run_wait_and_logs(client, image, name):
    c = client.containers.run(IMAGE, "sh -c 'echo one; sleep 0.2; echo two >&2; exit 7'", detach=True, name=name, network="none")
    assert c.name == name and len(c.short_id) == 12
    assert c.reload().status in ("running", "exited")
    result = c.wait(timeout=30)
    assert result.exit_code == 7 and result.exited_at is not None
    assert c.logs() == b"one\ntwo\n"
    assert c.logs(stderr=False) == b"one\n"
    assert c.logs(tail=1) == b"two\n"
    assert b"".join(c.logs(stream=True)) == b"one\ntwo\n"
    assert c.reload().status == "exited"
    c.remove()
    with pytest.raises(berth.NotFound):
        c.reload()


def test_logs_follow_streams_until_the_container_exits(client, image, name):
    c = client.containers.run(IMAGE, "sh -c 'for i in 1 2 3; do echo $i; sleep 0.1; done'", detach=True, name=name, network="none")
    chunks = list(c.logs(stream=True, follow=True))
    assert b"".join(chunks) == b"1\n2\n3\n"
    c.remove()


def test_exec_run_in_a_running_container(client, image, name):
    c = client.containers.run(IMAGE, ["sleep", "60"], detach=True, name=name, network="none")
    try:
        r = c.exec_run(["sh", "-c", "echo in $(pwd) as $(id -u); exit 4"], workdir="/tmp")
        assert r.exit_code == 4
        assert r.output == b"in /tmp as 0\n"
        code, out = c.exec_run("cat /etc/passwd", user="nobody", environment={"X": "1"})
        assert code == 0 and out.startswith(b"root:")
        assert [p.command for p in c.top()][0].startswith("sleep")
        assert c.stats().pids_current >= 1
    finally:
        c.remove(force=True)


def test_init_stops_a_shell_loop_on_the_stop_signal(client, image, name):
    c = client.containers.run(
        IMAGE, "sh -c 'while :; do sleep 1; done'", detach=True, name=name, network="none", init=True, stop_timeout=30
    )
    try:
        assert c.reload().attrs.config.stop_timeout == 30
        started = time.monotonic()
        # Under berth-init the loop is not PID 1: SIGTERM ends it (143), long before 30 s.
        assert c.stop().exit_code == 143
        assert time.monotonic() - started < 10
    finally:
        c.remove(force=True)


def test_a_restart_policy_starts_it_again(client, image, name):
    c = client.containers.run(
        IMAGE, "sh -c 'sleep 0.2; exit 1'", detach=True, name=name, network="none", restart_policy={"Name": "on-failure", "MaximumRetryCount": 1}
    )
    try:
        deadline = time.monotonic() + 20
        while not (c.reload().restart_count == 1 and c.status == "exited"):
            assert time.monotonic() < deadline, (c.status, c.restart_count)
            time.sleep(0.05)
        assert c.attrs.config.restart_policy.name == "on-failure"
    finally:
        c.remove(force=True)


def test_stop_pause_and_diff(client, image, name):
    c = client.containers.run(IMAGE, "sh -c 'touch /made; sleep 60'", detach=True, name=name, network="none")
    try:
        deadline = time.monotonic() + 20
        while {"Kind": "A", "Path": "/made"} not in c.diff():
            assert time.monotonic() < deadline, c.diff()
            time.sleep(0.05)
        c.pause()
        assert c.reload().status == "paused"
        c.unpause()
        assert c.reload().status == "running"
        stopped = c.stop(timeout=1)
        assert stopped.exit_code in (137, 143)
    finally:
        c.remove(force=True)


def test_events_while_a_container_runs(client, image, name):
    seen = []
    with client.events(["topic~=/tasks/", "topic~=/containers/"]) as events:

        def follow():
            for e in events:
                seen.append(e)
                if e.topic == "/containers/delete" and e.id == created[0].id:
                    return

        created = [client.containers.create(IMAGE, ["true"], name=name, network="none")]
        t = threading.Thread(target=follow, daemon=True)
        t.start()
        c = created[0]
        c.start()
        assert c.wait(timeout=30).exit_code == 0
        c.remove()
        t.join(20)
        assert not t.is_alive(), [e.topic for e in seen]
    mine = [e for e in seen if e.id == c.id]
    topics = [e.topic for e in mine]
    for wanted in ("/tasks/create", "/tasks/start", "/tasks/exit", "/containers/delete"):
        assert wanted in topics, topics
    exit_event = next(e for e in mine if e.topic == "/tasks/exit")
    assert exit_event.attributes["exit_code"] == "0"
    assert exit_event.namespace == client.namespace and exit_event.timestamp is not None


def test_push_remove_and_pull_back(client, image, registry, name):
    ref = f"{registry}/py/{name}:v1"
    tagged = image.tag(ref)
    assert tagged.id == image.id
    steps = []
    digest = client.images.push(ref, plain_http=True, progress=steps.append)
    assert digest == tagged.digest
    assert any(s.status == "pushed" for s in steps), steps
    assert client.images.remove(ref) == [ref]
    with pytest.raises(berth.NotFound):
        client.images.get(ref)
    pulled = client.images.pull(ref, plain_http=True)
    assert pulled.name == ref and pulled.id == image.id
    assert client.containers.run(ref, ["echo", "pulled"], remove=True, network="none") == b"pulled\n"
    pulled.remove()


def test_export_writes_an_archive_that_loads(client, image, tmp_path):
    path = tmp_path / "out.tar"
    size = client.images.export([IMAGE], path)
    assert path.stat().st_size == size > 0
    assert client.images.load(path) == [image]
    with pytest.raises(berth.NotFound):
        client.images.export(["no-such-image"], tmp_path / "none.tar")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tar"]


def test_unknown_container_is_not_found(client):
    with pytest.raises(berth.NotFound) as e:
        client.containers.get("no-such-container")
    assert e.value.code.value[0] == 5
    assert "no-such-container" in e.value.details


def test_a_taken_name_is_already_exists(client, image, name):
    c = client.containers.create(IMAGE, ["true"], name=name, network="none")
    try:
        with pytest.raises(berth.AlreadyExists):
            client.containers.create(IMAGE, ["true"], name=name, network="none")
    finally:
        c.remove()


def test_bad_input_is_invalid_argument(client, image):
    with pytest.raises(berth.InvalidArgument):
        client.containers.create(IMAGE, ["true"], name="bad name!", network="none")
    with pytest.raises(berth.InvalidArgument):
        client.containers.create(IMAGE, volumes=["nocolon"])


def test_list_shows_running_by_default(client, image, name):
    c = client.containers.create(IMAGE, ["sleep", "60"], name=name, network="none", labels={"suite": "py"})
    try:
        assert c not in client.containers.list()
        assert c in client.containers.list(all=True)
        c.start()
        assert c in client.containers.list()
        assert client.containers.list(filters={"label.suite": "py"}) == [c]
    finally:
        c.remove(force=True)


def test_default_network_gives_an_address(client, image, name):
    out = client.containers.run(IMAGE, ["sh", "-c", "cat /proc/net/dev | wc -l"], name=name, remove=True)
    # lo and eth0 beside the two header lines.
    assert int(out) >= 4


def test_volumes_outlive_containers_and_are_not_removed_in_use(client, image, name):
    vol = client.volumes.create(f"{name}-data", labels={"team": "py"})
    assert vol.labels == {"team": "py"} and not vol.anonymous
    client.containers.run(IMAGE, ["sh", "-c", "echo kept > /data/f"], volumes=[f"{vol.name}:/data"], remove=True)
    out = client.containers.run(IMAGE, ["cat", "/data/f"], volumes=[f"{vol.name}:/data:ro"], remove=True)
    assert out == b"kept\n"
    holder = client.containers.create(IMAGE, ["true"], name=name, volumes=[f"{vol.name}:/data"])
    with pytest.raises(berth.FailedPrecondition):
        vol.remove()
    assert vol.reload().containers == [name]
    holder.remove()
    assert vol.name in [v.name for v in client.volumes.list(filters={"label.team": "py"})]
    vol.remove()
    with pytest.raises(berth.NotFound):
        client.volumes.get(vol.name)


def test_put_and_get_archive_in_a_stopped_and_a_running_container(client, image, name):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("conf/app.ini")
        body = b"port=8080\n"
        info.size = len(body)
        t.addfile(info, io.BytesIO(body))
    c = client.containers.create(IMAGE, "cat /etc/conf/app.ini", name=name, network="none")
    try:
        assert c.put_archive("/etc", buf.getvalue())
        c.start()
        assert c.wait().exit_code == 0
        assert c.logs() == b"port=8080\n"
        chunks, stat = c.get_archive("/etc/conf")
        assert stat["name"] == "conf" and stat["mode"] & 0o170000 == 0o040000
        with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as t:
            assert t.extractfile("conf/app.ini").read() == b"port=8080\n"
        with pytest.raises(berth.NotFound):
            c.get_archive("/no/such/file")
        with pytest.raises(berth.InvalidArgument):
            c.put_archive("/etc", b"not a tar archive at all" * 40)
    finally:
        c.remove(force=True)
