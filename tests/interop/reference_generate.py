#!/usr/bin/env python3
"""Generate Kest interop fixtures with the Python reference (kest==0.3.0.post1).

Every passport is produced by the reference's own code: KestEntry + sign_entry
with a StaticIdentity, and (scenario hook_flow) the @kest_verified decorator
with configure(...) and MockPolicyEngine(allow_all=True). The only thing
replaced is StaticIdentity.private_key, set to a deterministic Ed25519 key:
seed = sha256(b"kest-interop:" + principal.encode()).digest().

Timestamps and entry ids (UUID v7) change on every run; the structure (entries,
principals, parents, trust scores, taints, labels apart from trace_id) does
not. Set iteration order in the reference's decorator is pinned by re-running
the interpreter with PYTHONHASHSEED=0.

Trust scores and taints follow SPEC.md section 4: root trust =
ORIGIN_TRUST_MAP[source_type]; non-root trust = min(parent scores) * self / 100
(integer floor, the reference's DefaultTrustEvaluator); taints =
sorted((union of parents' taints | added) - removed); a trust override replaces
the score. Entries built with KestEntry carry label "kest.source_type" (and
"kest.trust_override" for the override) so a semantic verifier can recompute
them; single_root and hook_flow carry only what the reference itself writes.

Output in OUTDIR (created if missing, files overwritten):
  NAME.passport.json  exactly Passport.serialize() (json.dumps(list), no newline)
  NAME.decoded.json   JSON array of the decoded payload dicts, in entry order
  jwks.json           {"keys":[{"kty":"OKP","crv":"Ed25519","x":..,"kid":<principal>}]}
  index.json          {"reference":..,"jwks":"jwks.json","scenarios":[NAME,..]}

Every passport is checked before anything is written: reference
PassportVerifier.verify, the strict checks of reference_verify.py (same
directory), and the expected structure of the scenario. Any problem is printed
to stderr and the exit status is 1 (2 for usage errors).
"""

from __future__ import annotations

import os
import sys

# The reference writes `taints` as list(set(...)) in its decorator; pin string
# hashing so that order is the same on every run.
if os.environ.get("PYTHONHASHSEED") != "0" and sys.executable:
    _env = dict(os.environ, PYTHONHASHSEED="0")
    os.execve(sys.executable, [sys.executable, os.path.abspath(__file__), *sys.argv[1:]], _env)

import argparse  # noqa: E402
import base64  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
from typing import Any, Dict, List, Optional  # noqa: E402

try:
    import rfc8785  # noqa: E402
    import uuid_utils  # noqa: E402
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat  # noqa: E402
    from opentelemetry import baggage, trace  # noqa: E402
    from opentelemetry import context as otel_context  # noqa: E402
    from opentelemetry.sdk.trace import TracerProvider  # noqa: E402

    import kest.core  # noqa: E402
    from kest.core import (  # noqa: E402
        BaggageManager,
        KestEntry,
        MockPolicyEngine,
        Passport,
        PassportVerifier,
        StaticIdentity,
        configure,
        invalidate_policy_cache,
        kest_verified,
        sign_entry,
    )
    from kest.core.models.passport import ORIGIN_TRUST_MAP, DefaultTrustEvaluator  # noqa: E402
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"reference_generate: cannot import the reference implementation ({exc}); "
        "run with the python of a venv that has kest==0.3.0.post1 installed",
        file=sys.stderr,
    )
    sys.exit(2)

sys.dont_write_bytecode = True  # do not leave __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_verify  # noqa: E402

REFERENCE = "kest==0.3.0.post1"

P_INGEST = "spiffe://kest.test/ingest"
P_AGENT = "spiffe://kest.test/agent"
P_TOOL = "spiffe://kest.test/tool"
P_SANITIZER = "spiffe://kest.test/sanitizer"

SCENARIOS = [
    "single_root",
    "linear_chain",
    "fan_out",
    "fan_in",
    "multi_principal",
    "taints",
    "sanitizer_override",
    "hook_flow",
]


class GenerateError(Exception):
    """A scenario could not be produced or failed its self-check."""


# ---------------------------------------------------------------------------
# Keys and identities
# ---------------------------------------------------------------------------

_IDENTITIES: Dict[str, StaticIdentity] = {}


def seed_for(principal: str) -> bytes:
    return hashlib.sha256(b"kest-interop:" + principal.encode()).digest()


def identity_for(principal: str) -> StaticIdentity:
    """The reference's StaticIdentity with its random key replaced by the deterministic one."""
    ident = _IDENTITIES.get(principal)
    if ident is None:
        ident = StaticIdentity(principal)
        ident.private_key = Ed25519PrivateKey.from_private_bytes(seed_for(principal))
        _IDENTITIES[principal] = ident
    return ident


def public_bytes(principal: str) -> bytes:
    return identity_for(principal).private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def entry_hash(jws: str) -> str:
    return hashlib.sha256(jws.encode()).hexdigest()


def decode_payload(jws: str) -> Dict[str, Any]:
    """Decode like the reference does (Passport._decode_payload), but never silently."""
    parts = jws.split(".")
    if len(parts) != 3:
        raise GenerateError(f"reference produced a JWS with {len(parts)} segments")
    payload = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    if payload != Passport._decode_payload(jws):
        raise GenerateError("own payload decoding differs from Passport._decode_payload")
    return payload


# ---------------------------------------------------------------------------
# Scenarios built with KestEntry + sign_entry
# ---------------------------------------------------------------------------


class Builder:
    """Builds one passport entry by entry with the reference's KestEntry/sign_entry.

    Computes trust and taints per SPEC section 4 and remembers what each entry
    is expected to contain, so the result can be checked afterwards.
    """

    def __init__(self) -> None:
        self.passport = Passport()
        self.nodes: Dict[str, Dict[str, Any]] = {}
        self.expected: List[Dict[str, Any]] = []

    def add(
        self,
        key: str,
        *,
        principal: str,
        operation: str,
        source_type: Optional[str],
        parents: List[str] = (),  # type: ignore[assignment]
        classification: str = "system",
        added: List[str] = (),  # type: ignore[assignment]
        removed: List[str] = (),  # type: ignore[assignment]
        trust_override: Optional[int] = None,
        source_label: bool = True,
        function_policies: Optional[List[str]] = None,
        content: Any = None,
    ) -> str:
        if key in self.nodes:
            raise GenerateError(f"duplicate node key {key!r}")
        parent_nodes = [self.nodes[p] for p in parents]
        if removed and trust_override is None and classification != "sanitizer":
            raise GenerateError(f"{key}: removed_taints needs a trust_override or sanitizer classification")

        if not parent_nodes:
            trust = ORIGIN_TRUST_MAP.get(source_type, 10) if source_type else 10
            inherited: set = set()
        else:
            self_score = ORIGIN_TRUST_MAP.get(source_type, 100) if source_type else 100
            trust = DefaultTrustEvaluator().calculate(self_score, [n["trust"] for n in parent_nodes])
            inherited = set().union(*(n["taints"] for n in parent_nodes))
        if trust_override is not None:
            trust = max(0, min(100, trust_override))
        taints = sorted((inherited | set(added)) - set(removed))

        labels: Dict[str, str] = {"principal": principal}
        if source_label and source_type:
            labels["kest.source_type"] = source_type
        if trust_override is not None:
            labels["kest.trust_override"] = str(trust)

        parent_ids = [n["hash"] for n in parent_nodes] or ["0"]
        entry = KestEntry(
            entry_id=str(uuid_utils.uuid7()),
            operation=operation,
            classification=classification,
            trust_score=trust,
            parent_ids=parent_ids,
            labels=labels,
            added_taints=list(added),
            removed_taints=list(removed),
            taints=taints,
            policy_context={"function_policies": function_policies or []},
        )
        if content is not None:
            # KestEntry has no public setter; the reference's hook leaves it "".
            entry._content_hash = hashlib.sha256(rfc8785.dumps(content)).hexdigest()
        jws = sign_entry(entry, identity_for(principal))
        self.passport.add_signature(jws)
        self.nodes[key] = {"hash": entry_hash(jws), "trust": trust, "taints": set(taints)}
        self.expected.append(
            {
                "principal": principal,
                "operation": operation,
                "classification": classification,
                "trust_score": trust,
                "parent_ids": parent_ids,
                "taints": taints,
            }
        )
        return key


def scenario_single_root() -> Builder:
    b = Builder()
    # Labels exactly as the reference's own hook would write them (principal only).
    b.add("root", principal=P_INGEST, operation="ingest", source_type="system", source_label=False)
    return b


def scenario_linear_chain() -> Builder:
    b = Builder()
    b.add("root", principal=P_INGEST, operation="ingest", source_type="system", classification="data")
    b.add("a", principal=P_INGEST, operation="retrieve", source_type="verified_rag", parents=["root"],
          function_policies=["allow_retrieval"])
    b.add("b", principal=P_INGEST, operation="call_partner_api", source_type="third_party_api", parents=["a"],
          content={"answer": 42, "unit": "widgets"})
    return b


def scenario_fan_out() -> Builder:
    b = Builder()
    b.add("root", principal=P_INGEST, operation="ingest", source_type="internal")
    b.add("left", principal=P_INGEST, operation="read_user_form", source_type="user_input", parents=["root"])
    b.add("right", principal=P_INGEST, operation="retrieve", source_type="verified_rag", parents=["root"])
    return b


def scenario_fan_in() -> Builder:
    b = Builder()
    b.add("root", principal=P_INGEST, operation="ingest", source_type="internal")
    b.add("left", principal=P_INGEST, operation="read_user_form", source_type="user_input", parents=["root"],
          added=["pii"])
    b.add("right", principal=P_INGEST, operation="call_partner_api", source_type="third_party_api",
          parents=["root"], added=["third_party"])
    b.add("join", principal=P_INGEST, operation="merge_results", source_type="internal",
          parents=["left", "right"])
    return b


def scenario_multi_principal() -> Builder:
    b = Builder()
    b.add("ingest", principal=P_INGEST, operation="ingest", source_type="system", classification="data")
    b.add("plan", principal=P_AGENT, operation="plan", source_type="verified_rag", parents=["ingest"])
    b.add("tool", principal=P_TOOL, operation="search_web", source_type="third_party_api", parents=["plan"])
    b.add("summary", principal=P_AGENT, operation="summarize", source_type="internal", parents=["tool"])
    return b


def scenario_taints() -> Builder:
    b = Builder()
    b.add("root", principal=P_INGEST, operation="read_user_form", source_type="user_input",
          added=["unverified", "pii"])
    b.add("web", principal=P_AGENT, operation="browse", source_type="internal", parents=["root"],
          added=["internet"])
    b.add("redact", principal=P_SANITIZER, operation="redact_pii", source_type="internal", parents=["web"],
          classification="sanitizer", removed=["pii"])
    return b


def scenario_sanitizer_override() -> Builder:
    b = Builder()
    b.add("root", principal=P_INGEST, operation="fetch_url", source_type="internet", added=["unverified"])
    b.add("sanitize", principal=P_SANITIZER, operation="validate_and_clean", source_type="internal",
          parents=["root"], classification="sanitizer", removed=["unverified"], trust_override=90)
    return b


# ---------------------------------------------------------------------------
# hook_flow: the reference's real @kest_verified path
# ---------------------------------------------------------------------------
#
# How the reference's hook chains calls (decorators.py): each wrapper reads the
# ambient OTel baggage (kest.passport / kest.passport_z / kest.chain_tip),
# signs its entry BEFORE running the function, and attaches the new baggage
# only while the wrapped function runs (detached on return). So decorated
# calls chain only when NESTED: sequential top-level calls would each be a new
# root, and two sequential calls inside one decorated function would both be
# children of that function's entry (the second one would not see the
# first). The passport is therefore captured inside the innermost call.
# The hook computes trust from ALL passport entries and taints from the union
# over ALL entries (not just the parents), which for a linear nested chain is
# the same as SPEC section 4.

HOOK_EXPECTED: List[Dict[str, Any]] = [
    # ingest_request: origin user_input (40) at a root, adds "unverified"
    {"principal": P_INGEST, "operation": "ingest_request", "trust_score": 40,
     "taints": ["unverified"], "added_taints": ["unverified"], "removed_taints": []},
    # agent_plan: origin verified_rag (90): 40 * 90 // 100 = 36
    {"principal": P_AGENT, "operation": "agent_plan", "trust_score": 36,
     "taints": ["internet", "pii", "unverified"], "added_taints": ["pii", "internet"], "removed_taints": []},
    # tool_call: trust_override 20 (below its parent), removes "pii"
    {"principal": P_TOOL, "operation": "tool_call", "trust_score": 20,
     "taints": ["internet", "unverified"], "added_taints": [], "removed_taints": ["pii"]},
]

HOOK_DEVIATION = {"policy": "legacy_egress", "tier": "platform", "reason": "interop fixture", "approver": None}


def scenario_hook_flow() -> Passport:
    trace.set_tracer_provider(TracerProvider())  # gives the hook a valid span -> labels.trace_id
    invalidate_policy_cache()
    configure(
        engine=MockPolicyEngine(allow_all=True),
        identity=identity_for(P_INGEST),
        enterprise_policies=["kest_interop_baseline"],
        deviations=[HOOK_DEVIATION],
        clear=True,
    )
    captured: Dict[str, Any] = {}

    @kest_verified(policy="tool_allowed", identity=identity_for(P_TOOL), trust_override=20, removed_taints=["pii"])
    def tool_call(query: str) -> str:
        captured["passport"] = BaggageManager.unpack(lambda k: baggage.get_baggage(k))
        captured["tip"] = baggage.get_baggage("kest.chain_tip")
        return f"results for {query}"

    @kest_verified(
        policy=["plan_allowed", "plan_allowed", "no_exfil"],  # duplicates are dropped by the reference
        identity=identity_for(P_AGENT),
        origin="verified_rag",
        added_taints=["pii", "internet"],
        context_map={
            "max_steps": {"key": "max_steps", "persist": True},
            "dry_run": {"key": "dry_run", "persist": True},
            "query": "query",
        },
    )
    def agent_plan(query: str, max_steps: int, dry_run: bool) -> str:
        return tool_call(query)

    @kest_verified(policy="ingest_allowed", origin="user_input", added_taints=["unverified"])
    def ingest_request(query: str) -> str:
        return agent_plan(query, max_steps=3, dry_run=False)

    ctx = baggage.set_baggage("kest.user", "alice@kest.test")
    ctx = baggage.set_baggage("kest.agent", "planner", context=ctx)
    token = otel_context.attach(ctx)
    try:
        result = ingest_request("weather in Lisbon")
    finally:
        otel_context.detach(token)
        configure(clear=True)
    if result != "results for weather in Lisbon":
        raise GenerateError(f"hook_flow: unexpected result {result!r}")
    passport = captured.get("passport")
    if not isinstance(passport, Passport) or not passport.entries:
        raise GenerateError("hook_flow: the decorated calls produced no passport in the baggage")
    if captured.get("tip") != entry_hash(passport.entries[-1]):
        raise GenerateError("hook_flow: kest.chain_tip is not the hash of the last entry")
    return passport


def check_hook_flow(payloads: List[Dict[str, Any]]) -> None:
    if len(payloads) != len(HOOK_EXPECTED):
        raise GenerateError(f"hook_flow: {len(payloads)} entries, expected {len(HOOK_EXPECTED)}")
    trace_ids = {p["labels"].get("trace_id") for p in payloads}
    if len(trace_ids) != 1 or None in trace_ids:
        raise GenerateError(f"hook_flow: expected one shared labels.trace_id, got {trace_ids}")
    for i, (p, exp) in enumerate(zip(payloads, HOOK_EXPECTED)):
        for k in ("operation", "trust_score", "added_taints", "removed_taints"):
            if p[k] != exp[k]:
                raise GenerateError(f"hook_flow entry {i}: {k} = {p[k]!r}, expected {exp[k]!r}")
        if p["labels"]["principal"] != exp["principal"]:
            raise GenerateError(f"hook_flow entry {i}: principal {p['labels']['principal']!r}")
        if sorted(p["taints"]) != exp["taints"]:
            raise GenerateError(f"hook_flow entry {i}: taints {p['taints']!r}, expected set {exp['taints']!r}")
        if p["classification"] != "system":
            raise GenerateError(f"hook_flow entry {i}: classification {p['classification']!r}")
        if p["policy_context"]["enterprise_policies"] != ["kest_interop_baseline"]:
            raise GenerateError(f"hook_flow entry {i}: enterprise_policies not recorded")
        if p["policy_context"]["deviations"] != [HOOK_DEVIATION]:
            raise GenerateError(f"hook_flow entry {i}: deviations not recorded")
        if json.loads(p["labels"].get("kest.identity", "null")) != {"user": "alice@kest.test", "agent": "planner"}:
            raise GenerateError(f"hook_flow entry {i}: labels.kest.identity = {p['labels'].get('kest.identity')!r}")
    if payloads[1]["labels"].get("max_steps") != 3 or payloads[1]["labels"].get("dry_run") is not False:
        raise GenerateError("hook_flow entry 1: persisted context_map labels (max_steps=3, dry_run=false) missing")
    if payloads[1]["policy_context"]["function_policies"] != ["plan_allowed", "no_exfil"]:
        raise GenerateError("hook_flow entry 1: function_policies not deduplicated as expected")


# ---------------------------------------------------------------------------
# Checks and output
# ---------------------------------------------------------------------------


def check_expected(name: str, payloads: List[Dict[str, Any]], expected: List[Dict[str, Any]]) -> None:
    if len(payloads) != len(expected):
        raise GenerateError(f"{name}: {len(payloads)} entries, expected {len(expected)}")
    for i, (p, exp) in enumerate(zip(payloads, expected)):
        got = {
            "principal": p["labels"]["principal"],
            "operation": p["operation"],
            "classification": p["classification"],
            "trust_score": p["trust_score"],
            "parent_ids": p["parent_ids"],
            "taints": p["taints"],
        }
        if got != exp:
            raise GenerateError(f"{name} entry {i}: got {got}, expected {exp}")


def check_passport(name: str, passport: Passport, providers: Dict[str, Any]) -> List[Dict[str, Any]]:
    try:
        if PassportVerifier.verify(passport, providers) is not True:
            raise GenerateError(f"{name}: reference PassportVerifier.verify did not return True")
    except ValueError as exc:
        raise GenerateError(f"{name}: reference PassportVerifier.verify rejected it: {exc}") from None
    payloads = []
    for i, jws in enumerate(passport.entries):
        try:
            payloads.append(reference_verify.check_entry(i, jws, providers))
        except reference_verify.CheckError as exc:
            raise GenerateError(f"{name}: {exc}") from None
        if decode_payload(jws) != payloads[-1]:
            raise GenerateError(f"{name} entry {i}: decoding mismatch")
    # Every parent must be an earlier entry (or the root sentinel alone).
    seen: set = set()
    for i, (jws, p) in enumerate(zip(passport.entries, payloads)):
        parents = p["parent_ids"]
        if parents != ["0"] and (not parents or any(x not in seen for x in parents)):
            raise GenerateError(f"{name} entry {i}: parent_ids {parents} are not earlier entries")
        seen.add(entry_hash(jws))
    # Round trip through the reference's (de)serialization.
    if Passport.deserialize(passport.serialize()).entries != passport.entries:
        raise GenerateError(f"{name}: Passport.deserialize(serialize()) does not round-trip")
    return payloads


def build_all() -> Dict[str, Dict[str, Any]]:
    builders = {
        "single_root": scenario_single_root,
        "linear_chain": scenario_linear_chain,
        "fan_out": scenario_fan_out,
        "fan_in": scenario_fan_in,
        "multi_principal": scenario_multi_principal,
        "taints": scenario_taints,
        "sanitizer_override": scenario_sanitizer_override,
    }
    results: Dict[str, Dict[str, Any]] = {}
    for name in SCENARIOS:
        if name == "hook_flow":
            results[name] = {"passport": scenario_hook_flow(), "expected": None}
        else:
            b = builders[name]()
            results[name] = {"passport": b.passport, "expected": b.expected}
    return results


def jwks_document() -> Dict[str, Any]:
    return {
        "keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": b64url(public_bytes(p)), "kid": p}
            for p in sorted(_IDENTITIES)
        ]
    }


def write_file(path: str, text: str) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    os.replace(tmp, path)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reference_generate.py",
        description=(
            "Write Kest interop fixtures produced by the Python reference kest==0.3.0.post1 "
            "(deterministic Ed25519 keys per principal, seed = sha256(b'kest-interop:' + principal)). "
            "Scenarios: " + ", ".join(SCENARIOS) + "."
        ),
        epilog=(
            "Writes OUTDIR/NAME.passport.json (Passport.serialize() output), OUTDIR/NAME.decoded.json "
            "(decoded payloads), OUTDIR/jwks.json and OUTDIR/index.json. Nothing is written unless "
            "every passport passes the reference verifier and the strict checks. "
            "Exit status: 0 ok, 1 generation or self-check failure, 2 usage error."
        ),
    )
    parser.add_argument("outdir", metavar="OUTDIR", help="output directory (created if missing)")
    args = parser.parse_args(argv)

    try:
        results = build_all()
        jwks = jwks_document()
        providers = reference_verify.load_jwks_document(jwks)
        decoded: Dict[str, List[Dict[str, Any]]] = {}
        for name, r in results.items():
            payloads = check_passport(name, r["passport"], providers)
            if r["expected"] is not None:
                check_expected(name, payloads, r["expected"])
            else:
                check_hook_flow(payloads)
            decoded[name] = payloads
    except (GenerateError, reference_verify.JwksError) as exc:
        print(f"reference_generate: {exc}", file=sys.stderr)
        return 1

    try:
        os.makedirs(args.outdir, exist_ok=True)
        for name in SCENARIOS:
            write_file(os.path.join(args.outdir, f"{name}.passport.json"), results[name]["passport"].serialize())
            write_file(
                os.path.join(args.outdir, f"{name}.decoded.json"),
                json.dumps(decoded[name], indent=2, ensure_ascii=False) + "\n",
            )
        write_file(os.path.join(args.outdir, "jwks.json"), json.dumps(jwks, indent=2) + "\n")
        index = {"reference": REFERENCE, "jwks": "jwks.json", "scenarios": SCENARIOS}
        write_file(os.path.join(args.outdir, "index.json"), json.dumps(index, indent=2) + "\n")
    except OSError as exc:
        print(f"reference_generate: cannot write to {args.outdir}: {exc}", file=sys.stderr)
        return 1

    for name in SCENARIOS:
        print(f"wrote {name} ({len(results[name]['passport'].entries)} entries)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
