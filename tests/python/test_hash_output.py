"""`hash_output=True`: the entry's `content_hash` is the SHA-256 of the RFC
8785 form of the return value (as the Rust hook's `hash_output`); a value
that is not JSON is recorded as a failed execution and never returned.
Without it `content_hash` is `""`, as the reference always writes."""

import asyncio
import hashlib
import json

import pytest

import kest_rs


def jcs_sha256(value):
    # RFC 8785 for these values (no floats needing ES6 formatting, ASCII
    # and non-ASCII strings as UTF-8, members sorted by UTF-16 code units).
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _entries(flow, verifier):
    return verifier.verify(flow.passport()).payloads()


@pytest.mark.parametrize(
    "value",
    [
        {"b": [1, 2, {"z": None, "a": True}], "a": "é", "n": -3},
        "plain",
        42,
        None,
        [1, "two", [3]],
        (1, 2),
    ],
)
def test_content_hash_is_the_hash_of_the_output(value, verifier):
    @kest_rs.kest_verified(policy="allow", hash_output=True)
    def produce():
        return value

    with kest_rs.Flow() as flow:
        assert produce() is value
    (entry,) = _entries(flow, verifier)
    expected = jcs_sha256(list(value) if isinstance(value, tuple) else value)
    assert entry["content_hash"] == expected
    assert "failed_execution" not in entry["taints"]


def test_float_output_uses_rfc8785_numbers(verifier):
    @kest_rs.kest_verified(policy="allow", hash_output=True)
    def produce():
        return {"x": 1.0, "y": 0.5, "z": 1e21}

    with kest_rs.Flow() as flow:
        produce()
    (entry,) = _entries(flow, verifier)
    assert entry["content_hash"] == hashlib.sha256(b'{"x":1,"y":0.5,"z":1e+21}').hexdigest()


def test_without_hash_output_content_hash_is_empty(verifier):
    @kest_rs.kest_verified(policy="allow")
    def produce():
        return {"a": 1}

    assert produce.__kest_hook__.hash_output is False
    with kest_rs.Flow() as flow:
        produce()
    assert _entries(flow, verifier)[0]["content_hash"] == ""


def test_unhashable_output_is_recorded_as_failed_and_withheld(verifier):
    ran = []

    @kest_rs.kest_verified(policy="allow", hash_output=True)
    def produce(value):
        ran.append(value)
        return value

    for bad in ({1, 2}, object(), float("nan"), {1: "int key"}, b"bytes"):
        with kest_rs.Flow() as flow:
            with pytest.raises(kest_rs.KestError) as info:
                produce(bad)
        assert info.value.kind == "hash", info.value
        (entry,) = _entries(flow, verifier)
        assert "failed_execution" in entry["taints"] and entry["trust_score"] == 0
        assert entry["content_hash"] == ""
    assert len(ran) == 5


def test_async_hash_output(verifier):
    @kest_rs.kest_verified(policy="allow", hash_output=True)
    async def produce(value):
        await asyncio.sleep(0)
        return value

    async def main():
        with kest_rs.Flow() as flow:
            assert await produce({"k": [1, 2]}) == {"k": [1, 2]}
            with pytest.raises(kest_rs.KestError) as info:
                await produce({3})
            assert info.value.kind == "hash"
        return flow

    good, bad = _entries(asyncio.run(main()), verifier)
    assert good["content_hash"] == jcs_sha256({"k": [1, 2]})
    assert "failed_execution" in bad["taints"]
