"""A passport across two real HTTP hops: an httpx client (kest_rs's event
hook injects the flow) → FastAPI service A → FastAPI service B, each
served by uvicorn on loopback behind kest_rs.KestMiddleware, each with its
own identity. Bad baggage → 4xx and the handler does not run."""

import asyncio
import base64
import json
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

import kest_rs
from _procs import free_port

A_ID = kest_rs.StaticIdentity.from_seed("spiffe://test.kest/service-a", b"\x0a" * 32)
B_ID = kest_rs.StaticIdentity.from_seed("spiffe://test.kest/service-b", b"\x0b" * 32)


class Server:
    def __init__(self, app):
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture
def services(identity):
    keys = json.loads(identity.jwks_json())["keys"] + json.loads(A_ID.jwks_json())["keys"] + json.loads(B_ID.jwks_json())["keys"]
    verifier = kest_rs.PassportVerifier({"keys": keys}, semantic=True)
    ran = []

    @kest_rs.kest_verified(policy="allow", identity=B_ID)
    async def b_step():
        ran.append("b")

    b = FastAPI()

    @b.post("/b")
    async def b_handler():
        await b_step()
        return {"passport": json.loads(kest_rs.current_passport().to_json()), "user": kest_rs.current_user()}

    b.add_middleware(kest_rs.KestMiddleware, verifier=verifier)

    @kest_rs.kest_verified(policy="allow", identity=A_ID)
    def a_step():
        ran.append("a")

    a = FastAPI()
    with Server(b) as b_server:

        @a.post("/a")
        async def a_handler():
            a_step()
            async with httpx.AsyncClient(event_hooks={"request": [kest_rs.httpx_async_event_hook()]}) as client:
                response = await client.post(b_server.url + "/b")
            return JSONResponse(response.json(), status_code=response.status_code)

        a.add_middleware(kest_rs.KestMiddleware, verifier=verifier)
        with Server(a) as a_server:
            yield a_server.url, b_server.url, verifier, ran


@kest_rs.kest_verified(policy="allow", source_type="user_input")
def client_step():
    return "asked"


def test_passport_crosses_two_hops(services, identity):
    a_url, _, verifier, ran = services
    with kest_rs.Flow() as flow:
        client_step()
        with httpx.Client(event_hooks={"request": [kest_rs.httpx_event_hook()]}) as client:
            response = client.post(a_url + "/a")
    assert response.status_code == 200, response.text
    assert ran == ["a", "b"]
    passport = verifier.verify(json.dumps(response.json()["passport"]))
    payloads = passport.payloads()
    assert [p["labels"]["principal"] for p in payloads] == [
        identity.workload_id,
        A_ID.workload_id,
        B_ID.workload_id,
    ]
    hashes = passport.hashes()
    assert payloads[1]["parent_ids"] == [hashes[0]] and payloads[2]["parent_ids"] == [hashes[1]]
    assert payloads[0]["labels"]["kest.source_type"] == "user_input"
    assert payloads[2]["trust_score"] == 40  # weakest link from user_input
    # The client's own flow is unchanged by what happened downstream.
    assert len(flow) == 1


def test_bad_baggage_is_refused_before_the_handler(services, identity):
    a_url, b_url, _, ran = services
    with kest_rs.Flow() as flow:
        client_step()
    good = kest_rs.inject(flow=flow)
    tip = flow.tips()[0]
    payload = good.split("kest.passport=")[1].split(",")[0]
    other = kest_rs.LocalIdentity("spiffe://test.kest/intruder")
    forged = kest_rs.PassportVerifier({"keys": []}).verify(kest_rs.Passport.from_json("[]")).record(other, "x", source_type="internal")
    cases = {
        "not json": "kest.passport=notjson",
        "not a jws": "kest.passport=%5B%22x%22%5D,kest.chain_tip=" + tip,
        "bad zlib": "kest.passport_z=" + base64.urlsafe_b64encode(b"garbage").rstrip(b"=").decode(),
        "unknown claim check": "kest.claim_check=6f1c0c1e-0000-4000-8000-000000000000",
        "wrong tip": good.replace(tip, "0" * 64),
        "unknown signer": kest_rs.inject(flow=kest_rs.Flow.from_passport(forged)),
        "tampered": good.replace(payload, payload[:60] + ("A" if payload[60] != "A" else "B") + payload[61:]),
        "no passport": None,
        "unrelated baggage only": "vendor=1",
    }
    for name, header in cases.items():
        for url in (a_url + "/a", b_url + "/b"):
            headers = {} if header is None else {"baggage": header}
            response = httpx.post(url, headers=headers)
            assert 400 <= response.status_code < 500, (name, response.status_code, response.text)
            body = response.json()
            assert body["error"], (name, body)
    assert ran == [], ran
    # And the good header still passes (B directly).
    response = httpx.post(b_url + "/b", headers={"baggage": good})
    assert response.status_code == 200 and ran == ["b"]
