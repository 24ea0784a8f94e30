"""Claim checks in a real Redis (kest_rs.RedisCache): the three tiers, and
fail closed when the stored passport is deleted, tampered with or the
server is gone — the receiving function never runs."""

import json

import pytest

import kest_rs
from kest_rs import BaggageError
from _procs import resp


@kest_rs.kest_verified(policy="allow", source_type="internal")
def step(i):
    return i


def _flow(n):
    with kest_rs.Flow() as flow:
        for i in range(n):
            step(i)
    return flow


def _claim_key(header):
    members = dict(kest_rs.parse_baggage(header))
    assert "kest.claim_check" in members, members
    assert "kest.passport" not in members and "kest.passport_z" not in members
    return "kest.claim." + members["kest.claim_check"]


def _cache(port):
    return kest_rs.RedisCache(f"redis://127.0.0.1:{port}/0")


def test_three_tiers_with_redis(redis_port, verifier):
    cache = _cache(redis_port)
    assert cache.name == f"redis://127.0.0.1:{redis_port}/0"
    # Tier 1 and 2 never touch the cache.
    inline = kest_rs.Propagator(cache=cache).inject(_flow(2)._native)
    assert "kest.passport" in dict(kest_rs.parse_baggage(inline))
    flow = _flow(12)
    compressed = kest_rs.Propagator(threshold=4096, cache=cache).inject(flow._native)
    assert "kest.passport_z" in dict(kest_rs.parse_baggage(compressed))
    assert resp(redis_port, "DBSIZE") == 0
    # Tier 3: the passport JSON is in Redis, with the configured TTL.
    propagator = kest_rs.Propagator(threshold=200, cache=cache, claim_ttl=120)
    header = propagator.inject(flow._native)
    key = _claim_key(header)
    stored = resp(redis_port, "GET", key)
    assert json.loads(stored) == json.loads(flow.passport().to_json())
    assert 0 < resp(redis_port, "PTTL", key) <= 120_000
    # A second process (a new cache object on the same server) resolves it.
    other = kest_rs.Propagator(threshold=200, cache=_cache(redis_port))
    received = kest_rs.extract(header, verifier, propagator=other)
    assert received.tips() == flow.tips() and len(received) == 12
    with received:
        step(99)
    assert len(verifier.verify(received.passport())) == 13


def test_claim_check_deleted_or_tampered_fails_closed(redis_port, verifier):
    propagator = kest_rs.Propagator(threshold=200, cache=_cache(redis_port))
    ran = []

    @kest_rs.kest_verified(policy="allow")
    def receiver():
        ran.append(1)

    def serve(header):
        with kest_rs.extract(header, verifier, propagator=propagator):
            receiver()

    flow = _flow(6)
    # Deleted (or expired): not an empty passport, an error.
    header = propagator.inject(flow._native)
    assert resp(redis_port, "DEL", _claim_key(header)) == 1
    with pytest.raises(BaggageError) as info:
        serve(header)
    assert info.value.kind == "claim_check_not_found" and info.value.http_status >= 400
    # Tampered: an entry's payload changed, signature kept.
    header = propagator.inject(flow._native)
    key = _claim_key(header)
    entries = json.loads(resp(redis_port, "GET", key))
    head, payload, sig = entries[0].split(".")
    entries[0] = ".".join([head, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), sig])
    assert resp(redis_port, "SET", key, json.dumps(entries)) == "OK"
    with pytest.raises(BaggageError):
        serve(header)
    # Replaced by another valid-looking passport (a different flow): the
    # chain tips in the header no longer match.
    header = propagator.inject(flow._native)
    assert resp(redis_port, "SET", _claim_key(header), _flow(6).passport().to_json()) == "OK"
    with pytest.raises(BaggageError) as info:
        serve(header)
    assert info.value.http_status in (400, 403, 409)
    # Not JSON at all.
    header = propagator.inject(flow._native)
    assert resp(redis_port, "SET", _claim_key(header), "not json") == "OK"
    with pytest.raises(BaggageError):
        serve(header)
    assert ran == []
    # The untouched path still works.
    serve(propagator.inject(flow._native))
    assert ran == [1]


def test_redis_down_is_an_error(redis_port, verifier):
    from _procs import free_port

    cache = _cache(redis_port)
    propagator = kest_rs.Propagator(threshold=200, cache=cache)
    header = propagator.inject(_flow(6)._native)
    dead = free_port()
    with pytest.raises(BaggageError) as info:
        kest_rs.RedisCache(f"redis://127.0.0.1:{dead}/0", connection_timeout=0.5)
    assert info.value.kind == "cache_unavailable"
    lazy = kest_rs.RedisCache(f"redis://127.0.0.1:{dead}/0", connection_timeout=0.5, command_timeout=0.5, lazy=True)
    with pytest.raises(BaggageError) as info:
        kest_rs.Propagator(threshold=200, cache=lazy).extract(header, verifier)
    assert info.value.kind == "cache_unavailable"
    with pytest.raises(BaggageError):
        kest_rs.Propagator(threshold=200, cache=lazy).inject(_flow(6)._native)


def test_cache_must_be_a_kest_cache():
    with pytest.raises(kest_rs.ConfigurationError):
        kest_rs.Propagator(cache=object())
