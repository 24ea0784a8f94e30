"""Shared fixtures: a deterministic identity, a configured runtime."""

import sys
from pathlib import Path

import pytest

import kest_rs

sys.path.insert(0, str(Path(__file__).parent))

SEED = bytes(range(32))
WORKLOAD = "spiffe://test.kest/python"


@pytest.fixture
def identity():
    return kest_rs.StaticIdentity.from_seed(WORKLOAD, SEED)


@pytest.fixture
def verifier(identity):
    return kest_rs.PassportVerifier([identity], semantic=True)


@pytest.fixture(autouse=True)
def runtime(identity):
    kest_rs.configure(identity=identity, engine=kest_rs.MockEngine(True, deny=["deny"]), clear=True)
    yield
    kest_rs.configure(clear=True)


@pytest.fixture
def redis_port(tmp_path):
    """A real redis-server on a free loopback port (fails when missing)."""
    import subprocess

    from _procs import free_port, redis_server, resp, stop, wait_for

    binary = redis_server()
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: resp(port, "PING") == "PONG", "redis-server", proc=proc)
        yield port
    finally:
        stop(proc)
