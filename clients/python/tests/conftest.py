"""The suite runs against a real agent named by the environment:

    BERTH_ADDRESS        the agent's socket
    BERTH_TEST_ARCHIVE   an OCI archive of docker.io/library/busybox:latest
                         (/bin/busybox and applet links: sh, echo, sleep, ...)
    BERTH_TEST_REGISTRY  host:port of a registry served over plain HTTP

tests/clients.rs (part of the project's test command) starts an agent and a
registry, writes the archive and runs this suite.
"""

import os
import uuid

import pytest

import berth

IMAGE = "docker.io/library/busybox:latest"


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run this suite through tests/clients.rs (see tests/conftest.py)", pytrace=False)
    return value


@pytest.fixture(scope="session")
def client():
    _env("BERTH_ADDRESS")
    with berth.connect() as c:
        yield c


@pytest.fixture(scope="session")
def image(client):
    images = client.images.load(_env("BERTH_TEST_ARCHIVE"))
    assert [i.name for i in images] == [IMAGE]
    return images[0]


@pytest.fixture(scope="session")
def registry():
    return _env("BERTH_TEST_REGISTRY")


@pytest.fixture
def name():
    """A container name of this test's own."""
    return f"py-{uuid.uuid4().hex[:10]}"


@pytest.fixture(autouse=True)
def no_leftovers(client):
    """Every test removes the containers it made."""
    before = {c.id for c in client.containers.list(all=True)}
    yield
    left = [c for c in client.containers.list(all=True) if c.id not in before]
    for c in left:
        c.remove(force=True)
    assert not left, f"containers left behind: {left}"
