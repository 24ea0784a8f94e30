"""The decorator on sync and async functions: verifiable passports,
fail-closed refusals, contextvars-scoped lineage."""

import asyncio
import threading

import pytest

import kest_rs
from kest_rs import ConfigurationError, KestError, PolicyDeniedError


@kest_rs.kest_verified(policy="allow", source_type="user_input", added_taints=["unverified"])
def ingest(text):
    return text.upper()


@kest_rs.kest_verified(policy="allow")
def summarise(text):
    return text[:3]


@kest_rs.kest_verified(policy="allow", classification="sanitizer", removed_taints=["unverified"], trust_override=90)
def sanitize(text):
    return text.strip()


def test_sync_calls_record_a_verifiable_chain(verifier):
    with kest_rs.Flow() as flow:
        assert ingest("hello") == "HELLO"
        assert summarise("hello") == "hel"
    passport = verifier.verify(flow.passport())
    assert len(passport) == 2
    first, second = passport.payloads()
    assert first["operation"] == "ingest"
    assert first["trust_score"] == 40
    assert first["taints"] == ["unverified"]
    assert first["parent_ids"] == ["0"]
    assert second["parent_ids"] == [passport.hashes()[0]]
    assert second["trust_score"] == 40
    assert second["runtime"]["name"] == "kest-rs"
    assert flow.tips() == [passport.hashes()[1]]


def test_sanitizer_removes_taints(verifier):
    with kest_rs.Flow() as flow:
        ingest("x")
        sanitize(" x ")
    p = verifier.verify(flow.passport()).payloads()
    assert p[1]["taints"] == [] and p[1]["trust_score"] == 90


def test_nested_calls_chain_without_an_explicit_flow(verifier):
    seen = {}

    @kest_rs.kest_verified(policy="allow")
    def outer():
        summarise("abc")
        seen["passport"] = kest_rs.current_passport()
        return 1

    assert outer() == 1
    assert len(seen["passport"]) == 1, "the inner call is recorded in the outer call's flow"
    assert kest_rs.current_passport() is None, "no flow leaks out of a top-level call"


def test_denied_policy_means_the_function_does_not_run():
    ran = []

    @kest_rs.kest_verified(policy="deny")
    def forbidden():
        ran.append(1)

    with kest_rs.Flow() as flow:
        with pytest.raises(PolicyDeniedError) as info:
            forbidden()
    assert ran == []
    assert info.value.kind == "policy_denied"
    assert info.value.policy == "deny" and info.value.tier == "function"
    assert isinstance(info.value, PermissionError) and isinstance(info.value, KestError)
    assert len(flow) == 0


def test_unknown_policy_in_a_strict_engine_denies():
    ran = []

    @kest_rs.kest_verified(policy="nope", engine=kest_rs.MockEngine(None, allow=["allow"]))
    def f():
        ran.append(1)

    with pytest.raises(PolicyDeniedError) as info:
        f()
    assert info.value.kind == "policy_failed" and ran == []


def test_missing_identity_raises_before_running():
    kest_rs.configure(engine=kest_rs.MockEngine(), clear=True)
    ran = []

    @kest_rs.kest_verified(policy="allow")
    def f():
        ran.append(1)

    with pytest.raises(ConfigurationError) as info:
        f()
    assert info.value.kind == "no_identity" and ran == []


def test_missing_engine_raises_before_running(identity):
    kest_rs.configure(identity=identity, clear=True)
    ran = []

    @kest_rs.kest_verified(policy="allow")
    def f():
        ran.append(1)

    with pytest.raises(ConfigurationError) as info:
        f()
    assert info.value.kind == "no_engine" and ran == []


def test_bad_hook_parameters_fail_when_decorating():
    with pytest.raises(ConfigurationError):
        kest_rs.kest_verified(policy=[])(lambda: None)
    with pytest.raises(ConfigurationError):
        kest_rs.kest_verified(policy="allow", removed_taints=["x"])(lambda: None)
    with pytest.raises(ConfigurationError):
        kest_rs.kest_verified(policy="allow", classification="bogus")(lambda: None)


def test_a_failing_function_is_recorded_and_its_error_propagates(verifier):
    @kest_rs.kest_verified(policy="allow")
    def boom():
        raise KeyError("x")

    with kest_rs.Flow() as flow:
        with pytest.raises(KeyError):
            boom()
    (entry,) = verifier.verify(flow.passport()).payloads()
    assert "failed_execution" in entry["added_taints"] and entry["trust_score"] == 0


def test_async_functions_record_and_deny(verifier):
    ran = []

    @kest_rs.kest_verified(policy="allow", source_type="internet")
    async def fetch(x):
        await asyncio.sleep(0)
        await asummarise(x)
        return x * 2

    @kest_rs.kest_verified(policy="allow")
    async def asummarise(x):
        return x

    @kest_rs.kest_verified(policy="deny")
    async def forbidden():
        ran.append(1)

    async def main():
        with kest_rs.Flow() as flow:
            assert await fetch(2) == 4
            with pytest.raises(PolicyDeniedError):
                await forbidden()
        return flow

    flow = asyncio.run(main())
    assert ran == []
    p = verifier.verify(flow.passport()).payloads()
    assert [e["operation"] for e in p] == ["asummarise", "fetch"]
    assert p[1]["trust_score"] == 10


def test_async_failure_and_cancellation_are_recorded(verifier):
    @kest_rs.kest_verified(policy="allow")
    async def boom():
        raise ValueError("no")

    branch = {}

    @kest_rs.kest_verified(policy="allow")
    async def slow():
        branch["flow"] = kest_rs.current_flow()
        await asyncio.sleep(10)

    async def main():
        with kest_rs.Flow() as flow:
            with pytest.raises(ValueError):
                await boom()
            task = asyncio.ensure_future(slow())
            await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return flow

    flow = asyncio.run(main())
    (failed,) = verifier.verify(flow.passport()).payloads()
    assert "failed_execution" in failed["added_taints"]
    # The task forked the flow (its own branch): the cancellation is there.
    p = verifier.verify(branch["flow"].passport()).payloads()
    assert len(p) == 2 and p[0] == failed
    assert set(p[1]["added_taints"]) == {"failed_execution", "cancelled"}
    assert p[1]["trust_score"] == 0


def test_asyncio_tasks_each_keep_their_own_branch(verifier):
    @kest_rs.kest_verified(policy="allow")
    async def step(name):
        await asyncio.sleep(0.001)
        return name

    async def branch(name):
        await step(name)
        await step(name + "-2")
        return kest_rs.current_flow()

    async def main():
        with kest_rs.Flow() as flow:
            await step("root")
            a, b = await asyncio.gather(branch("a"), branch("b"))
            assert len(flow) == 1, "branches do not write into the parent flow"
            flow.join(a, b)
            await step("join")
        return flow

    flow = asyncio.run(main())
    passport = verifier.verify(flow.passport())
    payloads = passport.payloads()
    assert len(payloads) == 6
    root = passport.hashes()[0]
    firsts = [e for e in payloads if e["operation"] in ("a", "b") or e["parent_ids"] == [root]]
    assert len([e for e in payloads if e["parent_ids"] == [root]]) == 2, "fan-out from the root"
    assert len(payloads[-1]["parent_ids"]) == 2, "fan-in names both branch tips"
    assert firsts


def test_threads_each_keep_their_own_flow(verifier):
    results = {}

    def worker(i):
        with kest_rs.Flow() as flow:
            for _ in range(20):
                summarise("abc")
        results[i] = flow.passport()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in results.values():
        v = verifier.verify(p)
        assert len(v) == 20 and len(v.tips()) == 1


def test_context_map_attributes_and_persisted_labels(verifier):
    @kest_rs.kest_verified(policy="allow", context_map={"amount": {"key": "amount", "persist": True}, "who": "who"})
    def pay(amount, who):
        return amount

    with kest_rs.Flow() as flow:
        pay(12, "bob")
    (entry,) = verifier.verify(flow.passport()).payloads()
    assert entry["labels"]["amount"] == "12"
    assert "who" not in entry["labels"]


def test_rego_and_cedar_engines_decide():
    rego = kest_rs.RegoEngine(
        {"trusted": "package kest.trusted\nimport rego.v1\ndefault allow := false\nallow if input.subject.trust_score >= 50"}
    )
    cedar = kest_rs.CedarEngine({"ok": "permit(principal, action, resource);"})

    @kest_rs.kest_verified(policy="trusted", engine=rego, source_type="internal")
    def internal():
        return "ok"

    @kest_rs.kest_verified(policy="trusted", engine=rego, source_type="internet")
    def untrusted():
        return "no"

    @kest_rs.kest_verified(policy="ok", engine=cedar)
    def cedar_ok():
        return "cedar"

    assert internal() == "ok"
    with pytest.raises(PolicyDeniedError):
        untrusted()
    assert cedar_ok() == "cedar"


def test_enterprise_tier_from_configure_applies(identity):
    kest_rs.configure(enterprise_policies=["deny"])
    with pytest.raises(PolicyDeniedError) as info:
        summarise("x")
    assert info.value.tier == "enterprise"


def test_identity_constructors_and_no_key_exposure(tmp_path, identity):
    jwk = identity.public_jwk()
    assert jwk["kty"] == "OKP" and jwk["kid"] == identity.workload_id and "d" not in jwk
    data = {a for a in dir(identity) if not a.startswith("_") and not callable(getattr(identity, a))}
    assert data == {"kind", "workload_id"}, "no key material is reachable from Python"
    local = kest_rs.LocalIdentity("spiffe://test.kest/local")
    assert local.kind == "local" and local.workload_id == "spiffe://test.kest/local"
    import base64, json
    d = base64.urlsafe_b64encode(bytes(range(32))).rstrip(b"=").decode()
    private = dict(jwk, d=d)
    from_jwk = kest_rs.StaticIdentity.from_jwk(json.dumps(private))
    assert from_jwk.public_jwk() == jwk
    path = tmp_path / "key.jwk"
    path.write_text(json.dumps(private))
    assert kest_rs.StaticIdentity.from_key_file(str(path)).public_jwk() == jwk
    with pytest.raises(kest_rs.IdentityError):
        kest_rs.StaticIdentity.from_seed("x", b"short")
    bad = dict(private, x=base64.urlsafe_b64encode(b"\x00" * 32).rstrip(b"=").decode())
    with pytest.raises(kest_rs.IdentityError):
        kest_rs.StaticIdentity.from_jwk(json.dumps(bad))


def test_sign_entry_and_record(identity, verifier):
    jws = kest_rs.sign_entry(identity, "root", source_type="internal")
    assert jws.count(".") == 2
    p = verifier.verify(kest_rs.Passport([jws]))
    p2 = p.record(identity, "child", added_taints=["t"])
    p3 = verifier.verify(p2.to_json())
    assert len(p3) == 2 and p3.payloads()[1]["taints"] == ["t"]
    child = kest_rs.sign_entry(identity, "child2", parents=p3)
    assert len(verifier.verify(kest_rs.Passport(p3.entries + [child]))) == 3


def test_verifier_rejects_tampering_with_a_kind(identity, verifier):
    with kest_rs.Flow() as flow:
        ingest("a")
        summarise("b")
    entries = flow.passport().entries
    h, p, s = entries[1].split(".")
    forged = s[:-2] + ("AA" if s[-2:] != "AA" else "BA")
    with pytest.raises(kest_rs.VerificationError) as info:
        verifier.verify(kest_rs.Passport([entries[0], f"{h}.{p}.{forged}"]))
    assert info.value.index == 1 and info.value.kind
    with pytest.raises(kest_rs.VerificationError) as info:
        verifier.verify(kest_rs.Passport([entries[1]]))
    assert info.value.index == 0
    other = kest_rs.PassportVerifier([kest_rs.LocalIdentity("spiffe://someone/else")])
    with pytest.raises(kest_rs.VerificationError):
        other.verify(flow.passport())
    with pytest.raises(kest_rs.VerificationError) as info:
        kest_rs.Passport.from_json('{"not": "a list"}')
    assert info.value.kind == "malformed_passport"


def test_forked_child_never_repeats_the_parents_ids(verifier):
    """Entry ids come from a thread-local CSPRNG that kest_rs reseeds in a
    forked child (rand does not): parent and child draw different ids."""
    import os

    @kest_rs.kest_verified(policy="allow")
    def root():
        return 1

    def entry_id():
        with kest_rs.Flow() as flow:
            root()
        return verifier.verify(flow.passport()).payloads()[0]["entry_id"]

    entry_id()  # the parent's generator is in use before the fork
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.write(write, entry_id().encode())
        finally:
            os._exit(0)
    os.close(write)
    mine = entry_id()
    theirs = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    assert theirs and theirs != mine
    assert theirs[14:] != mine[14:]
