"""Shared fixtures: a deterministic identity, a configured runtime."""

import pytest

import kest_rs

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
