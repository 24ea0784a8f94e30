"""Remote policy engines from Python: a real Cedar Agent, OPA's Data API
(served by a loopback stub speaking it, as the Rust tests do: OPA itself is
not installable here), and unreachable engines. Fail closed everywhere: an
engine that denies, errors, times out or cannot be reached means the
function does not run and a typed exception is raised."""

import asyncio
import json
import os
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

import kest_rs
from kest_rs import ConfigurationError, PolicyDeniedError
from _procs import cedar_agent, free_port, stop, wait_for

TOKEN = "kest-py-test-token"

CEDAR_POLICIES = [
    {
        "id": "send_email",
        "content": 'permit(principal, action == Action::"send_email", resource) when { context.subject.trust_score >= 50 };',
    },
    {"id": "invoke", "content": 'permit(principal, action == Action::"invoke", resource);'},
    {
        "id": "broken",
        "content": 'permit(principal, action == Action::"broken", resource) when { context.no_such_attribute == 1 };',
    },
]


def _http(method, url, body=None, token=None):
    request = urllib.request.Request(url, method=method, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", token)
    with urllib.request.urlopen(request, timeout=2) as response:
        return response.status, response.read()


@pytest.fixture
def agent(tmp_path):
    """A real cedar-agent on a free loopback port with the test policies."""
    binary = cedar_agent()
    port = free_port()
    log = open(tmp_path / "cedar-agent.log", "wb")
    proc = subprocess.Popen(
        [binary, "--addr", "127.0.0.1", "--port", str(port), "--authentication", TOKEN, "--log-level", "warn"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env={**os.environ, "ROCKET_CLI_COLORS": "false"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: 200 <= _http("GET", url + "/v1/", token=TOKEN)[0] < 300, "cedar-agent", proc=proc)
        status, body = _http("PUT", url + "/v1/policies", CEDAR_POLICIES, token=TOKEN)
        assert status == 200 and len(json.loads(body)) == 3, body
        yield url, proc
    finally:
        stop(proc)
        log.close()


def _protected(engine, policy, source_type="internal", ran=None):
    ran = [] if ran is None else ran

    @kest_rs.kest_verified(policy=policy, engine=engine, source_type=source_type)
    def op():
        ran.append(policy)
        return "done"

    return op, ran


def test_cedar_agent_allows_and_denies_per_action(agent, verifier):
    url, _ = agent
    engine = kest_rs.CedarAgentEngine(url, authorization=TOKEN)
    assert engine.name == "cedar-agent"
    with kest_rs.Flow() as flow:
        op, ran = _protected(engine, "invoke")
        assert op() == "done"
        op, _ = _protected(engine, "send_email", "internal", ran)  # trust 100 >= 50
        assert op() == "done"
    assert ran == ["invoke", "send_email"]
    payloads = verifier.verify(flow.passport()).payloads()
    assert [p["operation"] for p in payloads] == ["op", "op"]
    assert payloads[1]["policy_context"]["function_policies"] == ["send_email"]
    # Trust 40 (user_input) < 50: denied, the function does not run.
    op, ran = _protected(engine, "send_email", "user_input")
    with pytest.raises(PolicyDeniedError) as info:
        op()
    assert info.value.kind == "policy_denied" and info.value.policy == "send_email" and ran == []
    # No policy for that action: denied.
    op, ran = _protected(engine, "delete_everything")
    with pytest.raises(PolicyDeniedError):
        op()
    # A policy that errors is an error (Cedar alone would skip it), so a denial.
    op, ran = _protected(engine, "broken")
    with pytest.raises(PolicyDeniedError) as info:
        op()
    assert info.value.kind == "policy_failed" and ran == []


def test_cedar_agent_async_function(agent):
    url, _ = agent
    engine = kest_rs.CedarAgentEngine(url, authorization=TOKEN, name="cedar-remote")
    ran = []

    @kest_rs.kest_verified(policy="invoke", engine=engine, source_type="internal")
    async def allowed():
        ran.append("invoke")
        return 1

    @kest_rs.kest_verified(policy="send_email", engine=engine, source_type="internet")
    async def denied():
        ran.append("send_email")

    async def main():
        with kest_rs.Flow() as flow:
            assert await allowed() == 1
            with pytest.raises(PolicyDeniedError):
                await denied()
        return flow

    flow = asyncio.run(main())
    assert ran == ["invoke"] and len(flow) == 1


def test_cedar_agent_wrong_token_and_stopped_agent_fail_closed(agent):
    url, proc = agent
    for engine in (kest_rs.CedarAgentEngine(url), kest_rs.CedarAgentEngine(url, authorization="nope")):
        op, ran = _protected(engine, "invoke")
        with pytest.raises(PolicyDeniedError) as info:
            op()
        assert info.value.kind == "policy_failed" and ran == []
    engine = kest_rs.CedarAgentEngine(url, authorization=TOKEN, timeout=0.5)
    op, ran = _protected(engine, "invoke")
    op()
    stop(proc)
    # The allow above is in the decision cache (as in the Rust hook); a
    # fresh evaluation must reach the (stopped) agent.
    kest_rs.invalidate_policy_cache()
    with pytest.raises(PolicyDeniedError) as info:
        op()
    assert info.value.kind == "policy_failed" and ran == ["invoke"]


# ---------------------------------------------------------------------------
# OPA: a loopback server speaking OPA's Data API.


class _Opa(BaseHTTPRequestHandler):
    requests = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        url = urlparse(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(
            {"path": url.path, "query": parse_qs(url.query), "body": body, "auth": self.headers.get("Authorization")}
        )
        trust = body["input"]["subject"]["trust_score"]
        answers = {
            "/v1/data/kest/allow": (200, {"result": True}),
            "/v1/data/kest/deny": (200, {"result": False}),
            "/v1/data/kest/package": (200, {"result": {"allow": True, "reason": "ok"}}),
            "/v1/data/kest/truthy": (200, {"result": "yes"}),
            "/v1/data/kest/trusted": (200, {"result": {"allow": trust >= 50}}),
            "/v1/data/kest/nested": (200, {"result": {"decision": {"permitted": True}}}),
            "/v1/data/kest/undefined": (200, {}),
            "/v1/data/kest/error": (500, {"code": "internal_error", "errors": [{"message": "secret detail"}]}),
            "/v1/data/kest/unavailable": (503, {"code": "unavailable"}),
        }
        if url.path == "/v1/data/kest/slow":
            time.sleep(1.5)
            status, answer = 200, {"result": True}
        else:
            status, answer = answers.get(url.path, (200, {}))
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def opa():
    _Opa.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Opa)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_opa_request_and_decisions(opa, verifier):
    engine = kest_rs.OpaEngine(opa, bearer_token="opa-token")
    with kest_rs.Flow() as flow:
        for policy in ("kest.allow", "kest/package", "kest/trusted"):
            op, ran = _protected(engine, policy)
            assert op() == "done" and ran == [policy]
    assert len(verifier.verify(flow.passport())) == 3
    first = _Opa.requests[0]
    assert first["path"] == "/v1/data/kest/allow"
    assert first["query"] == {"strict-builtin-errors": ["true"]}
    assert first["auth"] == "Bearer opa-token"
    assert first["body"]["input"]["action"] == "op"
    assert first["body"]["input"]["subject"]["workload"] == "spiffe://test.kest/python"
    for policy, kind in [
        ("kest/deny", "policy_denied"),
        ("kest/truthy", "policy_denied"),  # only exactly `true` allows
        ("kest/undefined", "policy_failed"),
        ("kest/error", "policy_failed"),
        ("kest/unavailable", "policy_failed"),
        ("bad name", "policy_failed"),  # refused before sending
    ]:
        op, ran = _protected(engine, policy)
        with pytest.raises(PolicyDeniedError) as info:
            op()
        assert info.value.kind == kind, (policy, info.value)
        assert "secret detail" not in str(info.value)
        assert ran == []
    # The decision depends on the input: trust 10 (internet) < 50.
    op, ran = _protected(engine, "kest/trusted", "internet")
    with pytest.raises(PolicyDeniedError):
        op()
    assert ran == []


def test_opa_decision_path_and_timeout(opa):
    nested = kest_rs.OpaEngine(opa, decision_path="result.decision.permitted")
    op, ran = _protected(nested, "kest/nested")
    assert op() == "done"
    op, ran = _protected(nested, "kest/allow")  # `true` has no decision.permitted
    with pytest.raises(PolicyDeniedError):
        op()
    slow = kest_rs.OpaEngine(opa, timeout=0.3)
    op, ran = _protected(slow, "kest/slow")
    started = time.monotonic()
    with pytest.raises(PolicyDeniedError) as info:
        op()
    assert info.value.kind == "policy_failed" and ran == []
    assert time.monotonic() - started < 1.4


def test_unreachable_engines_fail_closed():
    port = free_port()  # nothing listens there
    for engine in (
        kest_rs.OpaEngine(f"http://127.0.0.1:{port}", timeout=0.5),
        kest_rs.CedarAgentEngine(f"http://127.0.0.1:{port}", timeout=0.5),
    ):
        op, ran = _protected(engine, "invoke")
        with pytest.raises(PolicyDeniedError) as info:
            op()
        assert info.value.kind == "policy_failed" and ran == []

        @kest_rs.kest_verified(policy="invoke", engine=engine)
        async def coroutine():
            ran.append("async")

        with pytest.raises(PolicyDeniedError):
            asyncio.run(coroutine())
        assert ran == []
    # As the process engine too (configure), with the tier policies.
    kest_rs.configure(engine=kest_rs.OpaEngine(f"http://127.0.0.1:{port}", timeout=0.5), enterprise_policies=["kest/allow"])
    op, ran = _protected(None, "kest/allow")
    with pytest.raises(PolicyDeniedError) as info:
        op()
    assert info.value.tier == "enterprise" and ran == []


def test_remote_engine_configuration_errors():
    for make in (
        lambda: kest_rs.OpaEngine("http://opa.example:8181"),  # plain http off loopback
        lambda: kest_rs.OpaEngine("ftp://127.0.0.1"),
        lambda: kest_rs.CedarAgentEngine("127.0.0.1:8180"),
        lambda: kest_rs.CedarAgentEngine("http://agent.example:8180"),
        lambda: kest_rs.OpaEngine("http://127.0.0.1:8181", timeout=0),
    ):
        with pytest.raises(ConfigurationError):
            make()
    assert kest_rs.OpaEngine("http://opa.example:8181", danger_allow_insecure_http=True).name == "opa"
    assert kest_rs.OpaEngine("https://opa.example", name="opa-platform").name == "opa-platform"
