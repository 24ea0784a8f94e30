"""A passport made by kest_rs crosses a Rust service and is verified at
every step: kest_rs (Python, this process) → `kest-relay` (Rust, axum
behind the `KestLayer`: restores, verifies and binds the passport, then
extends it with its own signed entry) → the reference's
`PassportVerifier` (kest==0.3.0.post1, in its own interpreter) and the
`kest` CLI. Nothing here is skipped: a missing program fails."""

import base64
import json
import subprocess
import time

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import kest_rs
from _procs import kest_cli, kest_relay, reference_python, stop

RELAY = "spiffe://test.kest/relay"

REFERENCE_VERIFY = r"""
import json, sys, base64
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from kest.core.models.passport import Passport, PassportVerifier

class Key:
    def __init__(self, raw):
        self.public_key = Ed25519PublicKey.from_public_bytes(raw)

request = json.load(sys.stdin)
providers = {kid: Key(base64.urlsafe_b64decode(x + "=" * (-len(x) % 4))) for kid, x in request["keys"].items()}
passport = Passport.deserialize(request["passport"])
try:
    ok = PassportVerifier.verify(passport, providers)
except Exception as error:  # the reference raises on a bad signature
    print(json.dumps({"ok": False, "error": type(error).__name__ + ": " + str(error)}))
else:
    print(json.dumps({"ok": bool(ok), "entries": len(passport.entries)}))
"""


def _b64(raw):
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@pytest.fixture
def relay(tmp_path, identity):
    key = Ed25519PrivateKey.generate()
    (tmp_path / "relay.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    relay_x = _b64(key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    keys = {identity.workload_id: _b64(identity.public_key_bytes()), RELAY: relay_x}
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid} for kid, x in keys.items()]}
    (tmp_path / "keys.jwks").write_text(json.dumps(jwks))
    port_file = tmp_path / "port"
    log = open(tmp_path / "relay.log", "wb")
    proc = subprocess.Popen(
        [
            kest_relay(),
            "--principal",
            RELAY,
            "--port-file",
            str(port_file),
            "--key",
            str(tmp_path / "relay.pem"),
            "--jwks",
            str(tmp_path / "keys.jwks"),
        ],
        stdout=log,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None, (tmp_path / "relay.log").read_text()
            assert time.monotonic() < deadline, "kest-relay did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port_file.read_text().strip()}", keys, tmp_path / "keys.jwks"
    finally:
        stop(proc)
        log.close()


@kest_rs.kest_verified(policy="allow", source_type="user_input", added_taints=["pii"])
def ask():
    return "question"


@kest_rs.kest_verified(policy="allow")
def plan():
    return "plan"


def _reference_verify(passport_json, keys):
    run = subprocess.run(
        [reference_python(), "-c", REFERENCE_VERIFY],
        input=json.dumps({"passport": passport_json, "keys": keys}),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _cli_verify(tmp_path, passport_json, jwks):
    (tmp_path / "passport.json").write_text(passport_json)
    return subprocess.run(
        [kest_cli(), "verify", "--semantic", "--keys", str(jwks), str(tmp_path / "passport.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_kest_rs_to_rust_relay_to_reference_and_cli(relay, identity, tmp_path):
    url, keys, jwks = relay
    with kest_rs.Flow() as flow:
        ask()
        plan()
        # Step 1: kest_rs's own verifier.
        assert len(kest_rs.PassportVerifier([identity], semantic=True).verify(flow.passport())) == 2
        with httpx.Client(event_hooks={"request": [kest_rs.httpx_event_hook()]}) as client:
            response = client.post(url + "/", json={})
    assert response.status_code == 200, response.text
    passport_json = json.dumps(response.json()["passport"])
    # Step 2: the relay verified and extended it; kest_rs verifies the result.
    verified = kest_rs.PassportVerifier({"keys": json.loads(jwks.read_text())["keys"]}, semantic=True).verify(passport_json)
    payloads = verified.payloads()
    assert len(payloads) == 3
    assert payloads[2]["labels"]["principal"] == RELAY and payloads[2]["operation"] == "relay"
    assert payloads[2]["parent_ids"] == flow.tips()
    assert payloads[2]["taints"] == ["pii"] and payloads[2]["trust_score"] == 40
    # Step 3: the reference verifies it, and really checks signatures.
    assert _reference_verify(passport_json, keys) == {"ok": True, "entries": 3}
    wrong = dict(keys, **{RELAY: keys[identity.workload_id]})
    assert _reference_verify(passport_json, wrong)["ok"] is False
    # Step 4: the CLI verifies it (semantic checks on), and refuses a tampered one.
    run = _cli_verify(tmp_path, passport_json, jwks)
    assert run.returncode == 0, run.stdout + run.stderr
    entries = json.loads(passport_json)
    entries[0], entries[1] = entries[1], entries[0]
    assert _cli_verify(tmp_path, json.dumps(entries), jwks).returncode == 1


def test_rust_relay_refuses_what_does_not_verify(relay):
    url, _, _ = relay
    stranger = kest_rs.LocalIdentity("spiffe://test.kest/stranger")

    @kest_rs.kest_verified(policy="allow", identity=stranger, source_type="internal")
    def forged():
        return 1

    with kest_rs.Flow() as flow:
        forged()
    for headers in ({"baggage": kest_rs.inject(flow=flow)}, {}, {"baggage": "kest.passport=notjson"}):
        response = httpx.post(url + "/", headers=headers, json={})
        assert 400 <= response.status_code < 500, (headers, response.status_code, response.text)
