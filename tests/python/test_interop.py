"""Wire compatibility with the reference (``kest==0.3.0.post1``) and the
``kest`` CLI, in both directions."""

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import kest_rs

import kest.core as ref  # the reference, kest==0.3.0.post1 (installed by scripts/test-python): never skipped
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
import uuid_utils  # noqa: E402

from kest.core import KestEntry, sign_entry as ref_sign_entry  # noqa: E402
from kest.core.models.passport import Passport as RefPassport, PassportVerifier as RefVerifier  # noqa: E402
from kest.core.identity.providers.local import StaticIdentity as RefStaticIdentity  # noqa: E402


class _PublicOnly:
    """What the reference verifier reads: a `public_key` attribute."""

    def __init__(self, raw: bytes):
        self.public_key = Ed25519PublicKey.from_public_bytes(raw)


@kest_rs.kest_verified(policy="allow", source_type="user_input", added_taints=["pii"])
def read_input():
    return 1


@kest_rs.kest_verified(policy="allow")
def process():
    return 2


def _kest_rs_passport():
    with kest_rs.Flow() as flow:
        read_input()
        process()
        process()
    return flow.passport()


def test_kest_rs_passports_verify_with_the_reference(identity):
    passport = _kest_rs_passport()
    providers = {identity.workload_id: _PublicOnly(identity.public_key_bytes())}
    assert RefVerifier.verify(RefPassport.deserialize(passport.to_json()), providers) is True
    # The reference really checks signatures: a wrong key fails.
    wrong = {identity.workload_id: _PublicOnly(kest_rs.LocalIdentity().public_key_bytes())}
    with pytest.raises(ValueError):
        RefVerifier.verify(RefPassport.deserialize(passport.to_json()), wrong)


def _ref_identity():
    ident = RefStaticIdentity("spiffe://ref.kest/python")
    raw = ident.private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ident, raw


def _ref_entry(ident, operation, parents, trust, taints=()):
    entry = KestEntry(
        entry_id=str(uuid_utils.uuid7()),
        operation=operation,
        classification="system",
        trust_score=trust,
        parent_ids=parents,
        labels={"principal": ident.get_identity()},
        added_taints=list(taints),
        taints=sorted(taints),
    )
    return ref_sign_entry(entry, ident)


def _jwks(principal, raw):
    x = __import__("base64").urlsafe_b64encode(raw).rstrip(b"=").decode()
    return {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": principal}]}


def test_reference_passports_verify_with_kest_rs():
    ident, raw = _ref_identity()
    root = _ref_entry(ident, "fetch", ["0"], 10, ["internet"])
    child = _ref_entry(ident, "summarise", [hashlib.sha256(root.encode()).hexdigest()], 10, ["internet"])
    text = RefPassport(entries=[root, child]).serialize()  # the reference writes `["a", "b"]`
    verifier = kest_rs.PassportVerifier(_jwks(ident.get_identity(), raw))
    verified = verifier.verify(text)
    assert len(verified) == 2 and verified.payloads()[1]["runtime"]["name"] == "kest-python"
    # Tampering is caught.
    with pytest.raises(kest_rs.VerificationError):
        verifier.verify(json.dumps([root.replace(root.split(".")[1][:4], "AAAA", 1), child]))


def test_reference_decorated_flow_verifies_with_kest_rs():
    from kest.core.framework.context import get_current_passport

    ident, raw = _ref_identity()
    ref.configure(identity=ident, engine=ref.MockPolicyEngine(), clear=True)
    seen = {}

    @ref.kest_verified(policy="allow")
    def inner():
        seen["passport"] = get_current_passport()

    @ref.kest_verified(policy="allow")
    def outer():
        inner()

    outer()
    verified = kest_rs.PassportVerifier(_jwks(ident.get_identity(), raw)).verify(seen["passport"])
    assert len(verified) == 2


def _cli():
    candidates = [os.environ.get("KEST_CLI")] + [
        str(Path(p) / "release" / "kest") for p in ("/root/.cache/kest-rs/target", os.environ.get("CARGO_TARGET_DIR") or "")
    ]
    for c in candidates:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return shutil.which("kest")


def test_kest_rs_passports_verify_with_the_cli(tmp_path, identity):
    cli = _cli()
    assert cli is not None, "the kest CLI is not built: scripts/test builds it and sets KEST_CLI"
    passport = _kest_rs_passport()
    (tmp_path / "p.json").write_text(passport.to_json())
    (tmp_path / "keys.jwks").write_text(identity.jwks_json())
    run = subprocess.run(
        [cli, "verify", "--semantic", "--keys", str(tmp_path / "keys.jwks"), str(tmp_path / "p.json")],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    tampered = json.loads(passport.to_json())
    tampered.reverse()
    (tmp_path / "bad.json").write_text(json.dumps(tampered))
    run = subprocess.run([cli, "verify", "--keys", str(tmp_path / "keys.jwks"), str(tmp_path / "bad.json")], capture_output=True)
    assert run.returncode == 1
