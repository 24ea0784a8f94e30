#!/usr/bin/env python3
"""Give ES256 (and mixed EdDSA + ES256) passports written by kest-rs to the
Python reference implementation (kest==0.3.0.post1) and report what happens.

Usage: reference_verify_es256.py JWKS_FILE PASSPORT_FILE

The JWKS may hold {"kty":"OKP","crv":"Ed25519"} and {"kty":"EC","crv":"P-256"}
keys (kid = principal). Prints one JSON object on stdout:

  independent: every ES256 entry checked with `cryptography` (OpenSSL) the
      way RFC 7518 section 3.4 says: the 64-byte r||s split into two integers,
      ECDSA P-256 with SHA-256 over the signing input; EdDSA entries with
      Ed25519. {"ok": true, "es256_entries": N} or {"ok": false, "error": ...}.
  reference: the reference's own PassportVerifier.verify(passport, providers)
      with the same public keys as its providers (objects with .public_key, as
      its verifier expects). {"ok": true} or {"ok": false, "error_type": ...,
      "error": ...}.
  reference_unknown_signer: the same call with the ES256 signers left out of
      the providers (the reference skips signers it has no key for).

Exit status: 0 when it ran (whatever the verdicts), 2 on a usage error.
"""

from __future__ import annotations

import base64
import json
import sys
from types import SimpleNamespace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from kest.core.models.passport import Passport, PassportVerifier


def b64d(s: str) -> bytes:
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def load_keys(path: str):
    with open(path, encoding="utf-8") as fh:
        doc = json.load(fh)
    keys = {}
    for jwk in doc["keys"]:
        if jwk.get("kty") == "OKP" and jwk.get("crv") == "Ed25519":
            keys[jwk["kid"]] = ("EdDSA", Ed25519PublicKey.from_public_bytes(b64d(jwk["x"])))
        elif jwk.get("kty") == "EC" and jwk.get("crv") == "P-256":
            x = int.from_bytes(b64d(jwk["x"]), "big")
            y = int.from_bytes(b64d(jwk["y"]), "big")
            keys[jwk["kid"]] = ("ES256", ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key())
        else:
            raise SystemExit(f"unsupported key {jwk!r}")
    return keys


def independent(entries, keys):
    es256 = 0
    for i, jws in enumerate(entries):
        h64, p64, s64 = jws.split(".")
        header = json.loads(b64d(h64))
        payload = json.loads(b64d(p64))
        alg, key = keys[payload["labels"]["principal"]]
        if header["alg"] != alg:
            return {"ok": False, "error": f"entry {i}: alg {header['alg']} for a {alg} key"}
        sig = b64d(s64)
        data = f"{h64}.{p64}".encode()
        try:
            if alg == "ES256":
                if len(sig) != 64:
                    return {"ok": False, "error": f"entry {i}: ES256 signature of {len(sig)} bytes"}
                r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
                key.verify(encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
                es256 += 1
            else:
                key.verify(sig, data)
        except Exception as exc:  # InvalidSignature and friends
            return {"ok": False, "error": f"entry {i}: {type(exc).__name__}: {exc}"}
    return {"ok": True, "es256_entries": es256}


def reference(text, providers):
    try:
        result = PassportVerifier.verify(Passport.deserialize(text), providers)
    except Exception as exc:
        return {"ok": False, "error_type": type(exc).__name__, "error": str(exc)}
    return {"ok": result is True}


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    keys = load_keys(argv[1])
    with open(argv[2], encoding="utf-8") as fh:
        text = fh.read()
    entries = json.loads(text)
    providers = {kid: SimpleNamespace(public_key=key) for kid, (_, key) in keys.items()}
    without_ec = {kid: p for kid, p in providers.items() if keys[kid][0] != "ES256"}
    print(
        json.dumps(
            {
                "independent": independent(entries, keys),
                "reference": reference(text, providers),
                "reference_unknown_signer": reference(text, without_ec),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
