#!/usr/bin/env python3
"""Verify Kest passports with the Python reference implementation (kest==0.3.0.post1).

Used by the Rust test suite to prove that passports written by kest-rs are
accepted by the reference, byte for byte (SPEC.md sections 2-3).

For every PASSPORT_FILE this script:

  1. parses the file itself and requires a JSON array of strings (the
     reference's Passport.deserialize silently returns an empty passport on
     malformed input, so it cannot be trusted with that check);
  2. fails on an empty passport unless --allow-empty is given;
  3. for every entry checks: exactly three unpadded base64url segments; the
     header is exactly {"alg":"EdDSA","kid":<labels.principal>,"typ":"JWS"}
     serialized as json.dumps(h, separators=(",", ":"), sort_keys=True); the
     payload is a JSON object whose labels.principal is a string present in
     the JWKS (the reference silently skips unknown signers; we do not); the
     payload bytes are already RFC 8785 canonical
     (rfc8785.dumps(json.loads(payload)) == payload);
  4. loads the passport with the reference's Passport.deserialize and runs
     the reference's PassportVerifier.verify (signatures and Merkle links).

Output: one line "ok NAME (N entries)" per passing passport on stdout; one
"FAIL ..." line per problem on stderr (file, entry index, check).

Exit status: 0 all passports pass; 1 at least one passport fails;
2 usage error or unusable JWKS file.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import re
import sys
from types import SimpleNamespace
from typing import Any, Dict, List

try:
    import rfc8785
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from kest.core.models.passport import Passport, PassportVerifier
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"reference_verify: cannot import the reference implementation ({exc}); "
        "run with the python of a venv that has kest==0.3.0.post1 installed",
        file=sys.stderr,
    )
    sys.exit(2)

EXIT_OK = 0
EXIT_FAIL = 1
EXIT_USAGE = 2

_B64URL_RE = re.compile(r"^[A-Za-z0-9_-]*$")


class CheckError(Exception):
    """One failed check; the message names the entry and the check."""


class JwksError(Exception):
    """The JWKS file cannot be used."""


def b64url_decode(segment: str, what: str) -> bytes:
    """Decode unpadded base64url strictly (no padding, no other alphabet)."""
    if not _B64URL_RE.match(segment):
        raise CheckError(f"{what}: not unpadded base64url (invalid character or padding)")
    if len(segment) % 4 == 1:
        raise CheckError(f"{what}: not valid base64url (length {len(segment)} mod 4 == 1)")
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
    except (binascii.Error, ValueError) as exc:
        raise CheckError(f"{what}: not valid base64url ({exc})") from None
    # Reject non-canonical encodings (unused trailing bits set).
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != segment:
        raise CheckError(f"{what}: non-canonical base64url (trailing bits set)")
    return raw


def load_jwks(path: str) -> Dict[str, Any]:
    """Load an OKP/Ed25519 JWKS into {principal: obj with .public_key}."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise JwksError(f"cannot read JWKS file {path}: {exc}") from None
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise JwksError(f"JWKS file {path} is not valid UTF-8 JSON: {exc}") from None
    return load_jwks_document(doc, f"JWKS file {path}")


def load_jwks_document(doc: Any, what: str = "JWKS") -> Dict[str, Any]:
    """Validate a parsed JWKS document and build {principal: obj with .public_key}."""
    where_doc = what
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f'{where_doc}: expected an object with a "keys" array')
    if not doc["keys"]:
        raise JwksError(f'{where_doc}: "keys" is empty')
    providers: Dict[str, Any] = {}
    for i, jwk in enumerate(doc["keys"]):
        where = f"{where_doc}: keys[{i}]"
        if not isinstance(jwk, dict):
            raise JwksError(f"{where}: not a JSON object")
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
            raise JwksError(
                f'{where}: unsupported key (kty={jwk.get("kty")!r}, crv={jwk.get("crv")!r}); '
                'only {"kty":"OKP","crv":"Ed25519"} is accepted'
            )
        if "alg" in jwk and jwk["alg"] != "EdDSA":
            raise JwksError(f'{where}: alg {jwk["alg"]!r} is not "EdDSA"')
        if "d" in jwk:
            raise JwksError(f"{where}: contains a private key member \"d\"")
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid:
            raise JwksError(f'{where}: "kid" (the principal) must be a non-empty string')
        if kid in providers:
            raise JwksError(f"{where}: duplicate kid {kid!r}")
        x = jwk.get("x")
        if not isinstance(x, str):
            raise JwksError(f'{where}: "x" must be a string')
        try:
            xb = b64url_decode(x, f'{where} "x"')
        except CheckError as exc:
            raise JwksError(str(exc)) from None
        if len(xb) != 32:
            raise JwksError(f'{where}: "x" decodes to {len(xb)} bytes, expected 32')
        try:
            pub = Ed25519PublicKey.from_public_bytes(xb)
        except ValueError as exc:
            raise JwksError(f"{where}: invalid Ed25519 public key: {exc}") from None
        providers[kid] = SimpleNamespace(public_key=pub)
    return providers


def check_entry(index: int, jws: str, providers: Dict[str, Any]) -> Dict[str, Any]:
    """Strict per-entry checks; returns the decoded payload."""
    where = f"entry {index}"
    parts = jws.split(".")
    if len(parts) != 3:
        raise CheckError(f"{where}: JWS has {len(parts)} segments, expected 3")
    h_b64, p_b64, s_b64 = parts
    header_bytes = b64url_decode(h_b64, f"{where}: header")
    payload_bytes = b64url_decode(p_b64, f"{where}: payload")
    sig = b64url_decode(s_b64, f"{where}: signature")
    if len(sig) != 64:
        raise CheckError(f"{where}: signature is {len(sig)} bytes, expected 64")

    try:
        payload = json.loads(payload_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckError(f"{where}: payload is not UTF-8 JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise CheckError(f"{where}: payload is not a JSON object")

    try:
        canonical = rfc8785.dumps(payload)
    except Exception as exc:  # rfc8785 raises its own error types
        raise CheckError(f"{where}: payload cannot be canonicalized (RFC 8785): {exc}") from None
    if canonical != payload_bytes:
        raise CheckError(
            f"{where}: payload bytes are not RFC 8785 canonical "
            f"(got {len(payload_bytes)} bytes, canonical form is {len(canonical)} bytes; "
            "duplicate members, whitespace, member order or number/string formatting differ)"
        )

    labels = payload.get("labels")
    if not isinstance(labels, dict):
        raise CheckError(f"{where}: payload member \"labels\" is missing or not an object")
    principal = labels.get("principal")
    if not isinstance(principal, str) or not principal:
        raise CheckError(f"{where}: labels.principal is missing or not a non-empty string")
    if principal not in providers:
        raise CheckError(f"{where}: principal {principal!r} is not in the JWKS")
    # The reference verifier prefers a top-level "principal" member over
    # labels.principal when picking the key; make sure both agree.
    if "principal" in payload and payload["principal"] != principal:
        raise CheckError(
            f"{where}: top-level payload member \"principal\" ({payload['principal']!r}) "
            f"differs from labels.principal ({principal!r})"
        )

    try:
        header = json.loads(header_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise CheckError(f"{where}: header is not UTF-8 JSON: {exc}") from None
    expected_header = {"alg": "EdDSA", "kid": principal, "typ": "JWS"}
    if header != expected_header:
        raise CheckError(
            f"{where}: header is {json.dumps(header, sort_keys=True)}, "
            f"expected {json.dumps(expected_header, sort_keys=True)}"
        )
    expected_header_bytes = json.dumps(header, separators=(",", ":"), sort_keys=True).encode()
    if header_bytes != expected_header_bytes:
        raise CheckError(
            f"{where}: header bytes {header_bytes!r} differ from the reference serialization "
            f"{expected_header_bytes!r}"
        )
    return payload


def verify_file(path: str, providers: Dict[str, Any], allow_empty: bool) -> int:
    """Check one passport file; returns the number of entries or raises CheckError."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise CheckError(f"cannot read file: {exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CheckError(f"file is not UTF-8: {exc}") from None
    try:
        entries = json.loads(text)
    except ValueError as exc:
        raise CheckError(f"file is not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise CheckError(f"passport is a JSON {type(entries).__name__}, expected an array of strings")
    for i, e in enumerate(entries):
        if not isinstance(e, str):
            raise CheckError(f"entry {i}: is a JSON {type(e).__name__}, expected a string")
    if not entries and not allow_empty:
        raise CheckError("passport is empty (pass --allow-empty to accept that)")

    for i, jws in enumerate(entries):
        check_entry(i, jws, providers)

    passport = Passport.deserialize(text)
    if list(passport.entries) != entries:
        raise CheckError(
            f"reference Passport.deserialize returned {len(passport.entries)} entries, "
            f"file has {len(entries)} (or they differ)"
        )
    try:
        ok = PassportVerifier.verify(passport, providers)
    except Exception as exc:
        raise CheckError(f"reference PassportVerifier.verify rejected it: {type(exc).__name__}: {exc}") from None
    if ok is not True:
        raise CheckError(f"reference PassportVerifier.verify returned {ok!r}, expected True")
    return len(entries)


def display_name(path: str) -> str:
    base = os.path.basename(path)
    for suffix in (".passport.json", ".json"):
        if base.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="reference_verify.py",
        description=(
            "Verify Kest passports (JSON arrays of JWS strings) with the Python reference "
            "implementation kest==0.3.0.post1, plus the strict checks the reference skips: "
            "JSON array of strings, non-empty, every signer in the JWKS, header exactly "
            '{"alg":"EdDSA","kid":<principal>,"typ":"JWS"}, payload bytes already RFC 8785 canonical.'
        ),
        epilog=(
            "Prints 'ok NAME (N entries)' per passing passport (NAME = file name without "
            ".passport.json) and 'FAIL FILE: entry I: CHECK' on stderr per failure. "
            "Exit status: 0 all pass, 1 some passport failed, 2 usage error or bad JWKS."
        ),
    )
    parser.add_argument(
        "--jwks",
        required=True,
        metavar="JWKS_FILE",
        help='JWKS with {"kty":"OKP","crv":"Ed25519","x":...,"kid":<principal>} keys',
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept a passport with no entries ([]); rejected by default",
    )
    parser.add_argument("passports", nargs="+", metavar="PASSPORT_FILE", help="passport JSON file(s)")
    args = parser.parse_args(argv)

    try:
        providers = load_jwks(args.jwks)
    except JwksError as exc:
        print(f"reference_verify: {exc}", file=sys.stderr)
        return EXIT_USAGE

    failures = 0
    for path in args.passports:
        try:
            n = verify_file(path, providers, args.allow_empty)
        except CheckError as exc:
            failures += 1
            print(f"FAIL {path}: {exc}", file=sys.stderr)
            continue
        print(f"ok {display_name(path)} ({n} entries)")

    if failures:
        print(
            f"reference_verify: {failures} of {len(args.passports)} passport(s) failed",
            file=sys.stderr,
        )
        return EXIT_FAIL
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
