"""Baggage inject/extract: three tiers, claim checks, fail closed."""

import base64
import zlib

import pytest

import kest_rs
from kest_rs import BaggageError


@kest_rs.kest_verified(policy="allow", source_type="internal")
def step(i):
    return i


def _flow(n):
    with kest_rs.Flow() as flow:
        for i in range(n):
            step(i)
    return flow


def test_inline_roundtrip_keeps_other_members(verifier):
    flow = _flow(2)
    header = kest_rs.inject("vendor=keep%20me", flow=flow)
    assert header.startswith("vendor=keep%20me,kest.passport=")
    members = dict(kest_rs.parse_baggage(header))
    assert members["kest.chain_tip"] == flow.tips()[0]
    received = kest_rs.extract(header, verifier)
    assert received.tips() == flow.tips()
    with received:
        step(3)
    assert len(verifier.verify(received.passport())) == 3


def test_compressed_and_claim_check_tiers(verifier):
    flow = _flow(12)
    cache = kest_rs.MemoryCache()
    compressed = kest_rs.Propagator(threshold=4096, cache=cache)
    header = compressed.inject(flow._native)
    keys = dict(kest_rs.parse_baggage(header))
    assert "kest.passport_z" in keys or "kest.claim_check" in keys
    assert len(compressed.extract(header, verifier).passport()) == 12
    tiny = kest_rs.Propagator(threshold=200, cache=cache)
    header = tiny.inject(flow._native)
    assert "kest.claim_check" in dict(kest_rs.parse_baggage(header))
    assert len(cache) >= 1
    assert len(tiny.extract(header, verifier).passport()) == 12
    # The claim check cannot be resolved by a propagator with another cache.
    with pytest.raises(BaggageError) as info:
        kest_rs.Propagator(threshold=200, cache=kest_rs.MemoryCache()).extract(header, verifier)
    assert info.value.kind and info.value.http_status >= 400
    # No cache: an oversized passport is an error, not an oversized header.
    with pytest.raises(BaggageError):
        kest_rs.Propagator(threshold=200).inject(flow._native)


def test_bad_baggage_raises(verifier):
    flow = _flow(1)
    header = kest_rs.inject(flow=flow)
    tip = flow.tips()[0]
    bad = [
        "kest.passport=%5B%22not-a-jws%22%5D,kest.chain_tip=" + tip,
        "kest.passport=notjson",
        "kest.passport_z=" + base64.urlsafe_b64encode(b"garbage").rstrip(b"=").decode(),
        "kest.claim_check=6f1c0c1e-0000-4000-8000-000000000000",
        header.replace(tip, "0" * 64),
    ]
    for value in bad:
        with pytest.raises(BaggageError):
            kest_rs.extract(value, verifier)
    bomb = base64.urlsafe_b64encode(zlib.compress(b"[" + b" " * (8 << 20) + b"]", 9)).rstrip(b"=").decode()
    with pytest.raises(BaggageError):
        kest_rs.extract("kest.passport_z=" + bomb, verifier)
    other = kest_rs.PassportVerifier([kest_rs.LocalIdentity("spiffe://x/other")])
    with pytest.raises(BaggageError):
        kest_rs.extract(header, other)


def test_no_passport_key_is_a_new_flow(verifier):
    assert len(kest_rs.extract("vendor=1", verifier)) == 0
    assert len(kest_rs.extract(None, verifier)) == 0


def test_inject_outside_a_flow_raises():
    with pytest.raises(kest_rs.ConfigurationError):
        kest_rs.inject()


def test_inject_headers_for_httpx_and_extract_asgi(verifier):
    flow = _flow(1)
    with flow:
        headers = kest_rs.inject_headers({"Baggage": "a=1", "x": "y"})
    assert headers["x"] == "y" and headers["baggage"].startswith("a=1,")
    scope = {"type": "http", "headers": [(b"baggage", headers["baggage"].encode())]}
    assert kest_rs.extract_asgi(scope, verifier).tips() == flow.tips()


def test_two_hops_through_an_asgi_app(identity, verifier):
    """A plain ASGI app restores the flow from baggage and runs a protected handler."""
    import asyncio

    @kest_rs.kest_verified(policy="allow")
    async def handle():
        return len(kest_rs.current_passport())

    async def app(scope, receive, send):
        with kest_rs.extract_asgi(scope, verifier) as flow:
            n = await handle()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"baggage", kest_rs.inject(flow=flow).encode())]})
        await send({"type": "http.response.body", "body": str(n).encode()})

    flow = _flow(2)
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request"}

    scope = {"type": "http", "headers": [(b"baggage", kest_rs.inject(flow=flow).encode())]}
    asyncio.run(app(scope, receive, send))
    assert sent[1]["body"] == b"2"
    back = kest_rs.extract(sent[0]["headers"][0][1].decode(), verifier)
    assert len(back) == 3
