#!/usr/bin/env python3
"""Time the Python reference (kest==0.3.0.post1) for scripts/bench-side-by-side.

Prints one JSON object: microseconds per operation, same keys and shapes as
our side (`cargo run --release -p kest-benches --bin side-by-side`):

  hook_mock / hook_rego / hook_cedar
      one call of a function decorated with the reference's @kest_verified
      (configure(engine=..., identity=...)), in a flow whose OTel baggage
      already holds a 10-entry passport (trust 40, taints pii + unverified)
      and kest.user / kest.agent; the hook reads that passport from the
      baggage, checks the policy (its decision cache is warm after the first
      call), signs and appends one entry and packs the baggage again.
      Engines: MockPolicyEngine(allow_all=True); RegoLocalEngine (regopy)
      with the same allowing Rego policy as ours; CedarLocalEngine (cedarpy)
      with a policy permitting the reference's fixed action "execute" (our
      bundled `invoke` permits its own action the same way).
  hook_mock_root
      the mock-engine call with no passport in the baggage (a root step).
  sign_entry
      kest.core.sign_entry of a ~900-byte entry (same fields as our fixture
      drafts: labels, policy context, otel context, input hash).
  verify_100
      PassportVerifier.verify of a 100-entry linear passport with the
      signer's public key (so every signature is checked).

Each figure is the median over 5 rounds of the mean of ITERATIONS / 5
operations, after ITERATIONS / 10 warm-up operations (time.perf_counter);
verify_100 runs a twentieth as many iterations.

Usage: reference_bench.py [--iterations N]     (default 2000)
Needs: kest==0.3.0.post1, regopy, cedarpy (the `rego` and `cedar` extras).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import statistics
import sys
import time
import types
from typing import Any, Callable, Dict, List

try:
    import uuid_utils
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from opentelemetry import baggage
    from opentelemetry import context as otel_context

    from kest.core import (
        BaggageManager,
        CedarLocalEngine,
        KestEntry,
        MockPolicyEngine,
        Passport,
        PassportVerifier,
        RegoLocalEngine,
        StaticIdentity,
        configure,
        invalidate_policy_cache,
        kest_verified,
        sign_entry,
    )
    import cedarpy  # noqa: F401  (CedarLocalEngine imports it lazily)
    import regopy  # noqa: F401  (RegoLocalEngine imports it lazily)
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"reference_bench: cannot import the reference implementation ({exc}); run with the python "
        "of a venv that has kest==0.3.0.post1, regopy and cedarpy installed",
        file=sys.stderr,
    )
    sys.exit(2)

sys.dont_write_bytecode = True

REFERENCE = "kest==0.3.0.post1"
PRINCIPAL = "spiffe://example.org/agent/research"  # kest_benches::PRINCIPAL
SEED = bytes([0x5A] * 32)  # kest_benches::signer()
FLOW_LEN = 10  # kest_benches::hook::FLOW_LEN
ROUNDS = 5

# Same text as kest_benches::hook::REGO_POLICY (valid Rego v0 and v1).
REGO_NAME = "bench/allow"
REGO_POLICY = (
    "package bench.allow\n\nimport rego.v1\n\ndefault allow := false\n\n"
    "allow if {\n\tinput.trust_score >= 30\n\tinput.is_root == false\n}\n"
)
# The reference always asks Cedar for Action::"execute".
CEDAR_NAME = "invoke"
CEDAR_POLICY = 'permit(principal, action == Action::"execute", resource);'


def measure(iterations: int, round_fn: Callable[[int], float]) -> float:
    """Median over ROUNDS of the mean µs per op; round_fn(n) returns seconds for n ops."""
    per_round = max(iterations // ROUNDS, 1)
    round_fn(max(iterations // 10, 1))
    means = [round_fn(per_round) * 1e6 / per_round for _ in range(ROUNDS)]
    return statistics.median(means)


def identity() -> StaticIdentity:
    ident = StaticIdentity(PRINCIPAL)
    ident.private_key = Ed25519PrivateKey.from_private_bytes(SEED)
    return ident


def entry_for(i: int, parents: List[str]) -> KestEntry:
    """The reference twin of kest_benches::draft(i) (trust and taints precomputed)."""
    added = ["pii", "unverified"] if i == 0 else ([f"derived_{i}"] if i % 50 == 0 else [])
    taints = sorted({"pii", "unverified"} | {f"derived_{k}" for k in range(50, i + 1, 50)})
    labels = {
        "principal": PRINCIPAL,  # where PassportVerifier looks for the signer (as the hook writes it)
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
        "kest.identity": json.dumps({"agent": "research", "user": "alice"}, separators=(",", ":")),
    }
    if i == 0:
        labels["kest.source_type"] = "user_input"
    entry = KestEntry(
        entry_id=str(uuid_utils.uuid7()),
        operation=f"web_search_{i:03d}",
        classification="system",
        trust_score=40,
        parent_ids=parents or ["0"],
        labels=labels,
        added_taints=added,
        taints=taints,
        policy_context={
            "enterprise_policies": ["residency", "pii"],
            "platform_policies": ["rate_limit", "tools"],
            "app_policies": ["scope"],
            "function_policies": ["domains"],
        },
    )
    entry._otel_context = {"span_id": "00f067aa0ba902b7"}
    entry._input_hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    return entry


def build_passport(n: int, ident: StaticIdentity) -> Passport:
    passport = Passport()
    parents: List[str] = []
    for i in range(n):
        jws = sign_entry(entry_for(i, parents), ident)
        passport.add_signature(jws)
        parents = [hashlib.sha256(jws.encode()).hexdigest()]
    return passport


def bench_hooks(iterations: int, ident: StaticIdentity, ops: Dict[str, float], sizes: Dict[str, Any]) -> None:
    base = build_passport(FLOW_LEN, ident)
    ctx = otel_context.get_current()
    for key, value in BaggageManager.pack(base).items():
        ctx = baggage.set_baggage(key, value, context=ctx)
    ctx = baggage.set_baggage("kest.user", "alice", context=ctx)
    ctx = baggage.set_baggage("kest.agent", "research", context=ctx)

    engines = {
        "mock": ("allow", MockPolicyEngine(allow_all=True)),
        "rego": (REGO_NAME, RegoLocalEngine(policies={REGO_NAME: REGO_POLICY})),
        "cedar": (CEDAR_NAME, CedarLocalEngine(policies={CEDAR_NAME: CEDAR_POLICY}, entities=[])),
    }
    token = otel_context.attach(ctx)
    try:
        for name, (policy, engine) in engines.items():
            captured: Dict[str, Any] = {}

            @kest_verified(policy=policy)
            def web_search() -> int:
                return 42

            @kest_verified(policy=policy)
            def web_search_probe() -> int:
                captured["passport"] = BaggageManager.unpack(lambda k: baggage.get_baggage(k))
                return 42

            invalidate_policy_cache()  # its key does not include the engine
            configure(engine=engine, identity=ident, clear=True)
            # The engine itself must allow this flow (a denial would be cached).
            probe_ctx = {"principal": PRINCIPAL, "trust_score": 40, "is_root": False, "user": "alice",
                         "agent": "research", "task": "", "scope": "", "chain_tip": "0", "origin": None,
                         "jwt": None}
            if engine.evaluate("0190b6a0-0000-7000-8000-000000000000", [policy], probe_ctx) is not True:
                raise SystemExit(f"reference_bench: the reference {name} engine does not allow the bench flow")
            if web_search_probe() != 42:
                raise SystemExit(f"reference_bench: {name} hook returned a wrong value")
            after = captured["passport"]
            if len(after.entries) != FLOW_LEN + 1:
                raise SystemExit(f"reference_bench: {name} hook: {len(after.entries)} entries, expected {FLOW_LEN + 1}")
            sizes[f"hook_{name}_jws_bytes"] = len(after.entries[-1])

            def round_fn(n: int, fn=web_search) -> float:
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                return time.perf_counter() - start

            ops[f"hook_{name}"] = measure(iterations, round_fn)
    finally:
        otel_context.detach(token)

    # hook_mock_root: the same call with no passport in the baggage (a root).
    root_ctx = baggage.set_baggage("kest.user", "alice", context=otel_context.get_current())
    root_ctx = baggage.set_baggage("kest.agent", "research", context=root_ctx)
    token = otel_context.attach(root_ctx)
    try:

        @kest_verified(policy="allow")
        def web_search_root() -> int:
            return 42

        invalidate_policy_cache()
        configure(engine=MockPolicyEngine(allow_all=True), identity=ident, clear=True)
        web_search_root()

        def root_round(n: int) -> float:
            start = time.perf_counter()
            for _ in range(n):
                web_search_root()
            return time.perf_counter() - start

        ops["hook_mock_root"] = measure(iterations, root_round)
    finally:
        otel_context.detach(token)
        configure(clear=True)
        invalidate_policy_cache()


def bench_sign(iterations: int, ident: StaticIdentity, ops: Dict[str, float], sizes: Dict[str, Any]) -> None:
    entry = entry_for(50, [hashlib.sha256(b"parent").hexdigest()])
    payload = sign_entry(entry, ident).split(".")[1]
    sizes["sign_entry_payload_bytes"] = len(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))

    def round_fn(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            sign_entry(entry, ident)
        return time.perf_counter() - start

    ops["sign_entry"] = measure(iterations, round_fn)


def bench_verify(iterations: int, ident: StaticIdentity, ops: Dict[str, float], sizes: Dict[str, Any]) -> None:
    passport = build_passport(100, ident)
    sizes["verify_100_json_bytes"] = len(passport.serialize())
    providers = {PRINCIPAL: types.SimpleNamespace(public_key=ident.private_key.public_key())}
    # Prove the signatures are really checked (the verifier skips entries
    # whose principal has no provider): a flipped signature on the last
    # entry (no child link to break) must fail as a signature failure.
    bad = list(passport.entries)
    head, body, sig = bad[-1].split(".")
    bad[-1] = f"{head}.{body}.{'A' if sig[0] != 'A' else 'B'}{sig[1:]}"
    try:
        PassportVerifier.verify(Passport(entries=bad), providers)
        raise SystemExit("reference_bench: the reference verifier accepted a bad signature")
    except ValueError as exc:
        if "Signature verification failed" not in str(exc):
            raise SystemExit(f"reference_bench: unexpected refusal of the bad signature: {exc}") from None
    if PassportVerifier.verify(passport, providers) is not True:
        raise SystemExit("reference_bench: the reference verifier rejected the bench passport")

    def round_fn(n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            PassportVerifier.verify(passport, providers)
        return time.perf_counter() - start

    ops["verify_100"] = measure(max(iterations // 20, ROUNDS * 2), round_fn)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--iterations", type=int, default=2000)
    args = parser.parse_args()
    if args.iterations < ROUNDS:
        parser.error(f"--iterations must be at least {ROUNDS}")
    from importlib.metadata import version

    if version("kest") != REFERENCE.split("==")[1]:
        print(f"reference_bench: need {REFERENCE}, found kest {version('kest')}", file=sys.stderr)
        return 2
    ident = identity()
    ops: Dict[str, float] = {}
    sizes: Dict[str, Any] = {}
    bench_hooks(args.iterations, ident, ops, sizes)
    bench_sign(args.iterations, ident, ops, sizes)
    bench_verify(args.iterations, ident, ops, sizes)
    print(json.dumps({
        "impl": REFERENCE,
        "python": sys.version.split()[0],
        "unit": "us_per_op",
        "iterations": args.iterations,
        "ops": ops,
        "sizes": sizes,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
