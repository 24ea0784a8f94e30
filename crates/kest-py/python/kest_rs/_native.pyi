"""Type stubs of the native module ``kest_rs._native`` (Rust, PyO3).

Every method that signs, verifies, canonicalizes, hashes, evaluates a
policy or packs baggage runs in Rust with the GIL released. Key material
never crosses into Python objects.
"""

from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

RUNTIME_VERSION: str

class Identity:
    """A workload identity that signs passport entries (key held in Rust)."""

    @property
    def workload_id(self) -> str:
        """The workload id: the ``principal`` label and the JWS ``kid``."""
    def get_identity(self) -> str:
        """Reference name of :attr:`workload_id`."""
    @property
    def kind(self) -> str:
        """``local`` or ``static``."""
    def public_jwk(self) -> Dict[str, Any]:
        """The public key as a JWK (``kid`` = the workload id)."""
    def jwks_json(self) -> str:
        """The public key as a JWKS JSON document."""
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""

class LocalIdentity(Identity):
    """A fresh Ed25519 key for this process (development)."""

    def __init__(self, workload_id: Optional[str] = None) -> None: ...

class StaticIdentity(Identity):
    """An explicit workload id and key."""

    @staticmethod
    def from_seed(workload_id: str, seed: bytes) -> "StaticIdentity":
        """From a 32-byte Ed25519 seed."""
    @staticmethod
    def from_pem(workload_id: str, pem: str) -> "StaticIdentity":
        """From a PKCS#8 PEM private key."""
    @staticmethod
    def from_jwk(jwk: str, workload_id: Optional[str] = None) -> "StaticIdentity":
        """From a private JWK (JSON text); the workload id defaults to its ``kid``."""
    @staticmethod
    def from_key_file(path: Union[str, "os.PathLike[str]"], workload_id: Optional[str] = None) -> "StaticIdentity":
        """From a key file (PEM, which needs ``workload_id``, or a private JWK)."""
    @staticmethod
    def generate(workload_id: str) -> "StaticIdentity":
        """A new random key for ``workload_id``."""

class Engine:
    """A policy engine (evaluates in Rust)."""

    @property
    def name(self) -> str:
        """The engine's name (part of decision-cache keys)."""

class MockEngine(Engine):
    """Allows (``allow_all=True``) or denies every policy, with exceptions;
    ``allow_all=None`` knows only the listed policies (others deny)."""

    def __init__(self, allow_all: Optional[bool] = True, *, allow: Sequence[str] = ..., deny: Sequence[str] = ...) -> None: ...

class RegoEngine(Engine):
    """In-process Rego: policy name → module; a policy allows when its rule is true."""

    def __init__(
        self,
        policies: Optional[Mapping[str, str]] = None,
        *,
        directory: Optional[str] = None,
        query_rule: Optional[str] = None,
        rules: Optional[Mapping[str, str]] = None,
        data: Any = None,
        rego_v0: bool = False,
        name: Optional[str] = None,
    ) -> None: ...

class CedarEngine(Engine):
    """In-process Cedar: policy name → policy set."""

    def __init__(
        self,
        policies: Optional[Mapping[str, str]] = None,
        entities: Any = None,
        *,
        schema: Any = None,
        directory: Optional[str] = None,
        name: Optional[str] = None,
    ) -> None: ...

class RoutedEngine(Engine):
    """Routes policies to engines by name prefix."""

    def __init__(self, routes: Mapping[str, Engine]) -> None: ...

class OpaEngine(Engine):
    """Rego policies on a remote OPA server (Data API, ``strict-builtin-errors``).
    Allows only on exactly ``true``; undefined, errors, timeouts, unreachable
    servers and other answers deny (the function does not run). Plain http
    only to loopback unless ``danger_allow_insecure_http``."""

    def __init__(
        self,
        url: str,
        *,
        timeout: Optional[float] = None,
        decision_path: Optional[str] = None,
        bearer_token: Optional[str] = None,
        name: Optional[str] = None,
        danger_allow_insecure_http: bool = False,
    ) -> None: ...

class CedarAgentEngine(Engine):
    """Cedar policies on a remote Cedar Agent (``/v1/is_authorized``; the
    action is the policy name). Allows only on ``Allow`` without diagnostics
    errors; anything else, timeouts and unreachable agents deny."""

    def __init__(
        self,
        url: str,
        *,
        timeout: Optional[float] = None,
        authorization: Optional[str] = None,
        name: Optional[str] = None,
        danger_allow_insecure_http: bool = False,
    ) -> None: ...

class Passport:
    """An ordered list of signed entries forming a Merkle DAG.

    Parsed passports are unverified until :meth:`PassportVerifier.verify`
    returns a verified one. A passport object is always true.
    """

    def __init__(self, entries: Optional[Sequence[str]] = None) -> None: ...
    @staticmethod
    def from_json(text: str) -> "Passport":
        """Parses a JSON array of JWS strings (raises ``VerificationError``)."""
    @staticmethod
    def deserialize(text: str) -> "Passport":
        """Reference name of :meth:`from_json` (but raises instead of returning an empty passport)."""
    def to_json(self) -> str:
        """The passport as a JSON array of JWS strings."""
    def serialize(self) -> str:
        """Reference name of :meth:`to_json`."""
    @property
    def entries(self) -> List[str]:
        """The JWS compact strings, in order."""
    @property
    def is_verified(self) -> bool:
        """Whether the passport was verified or recorded in Rust."""
    def payloads(self) -> List[Dict[str, Any]]:
        """The decoded entry payloads."""
    def hashes(self) -> List[str]:
        """Hex SHA-256 of each entry's JWS."""
    def tips(self) -> List[str]:
        """Hashes of the entries no other entry names as a parent."""
    def record(
        self,
        identity: Identity,
        operation: str,
        *,
        source_type: Optional[str] = None,
        added_taints: Sequence[str] = ...,
        removed_taints: Sequence[str] = ...,
        trust_override: Optional[int] = None,
        classification: str = "system",
        labels: Optional[Mapping[str, str]] = None,
        metadata: Any = None,
        root: bool = False,
    ) -> "Passport":
        """A new verified passport with one more entry on this one's tips."""
    def merge(self, other: "Passport") -> "Passport":
        """Both passports' entries, first occurrence kept (verified only)."""
    def len(self) -> int:
        """Number of entries."""
    def __len__(self) -> int: ...

class PassportVerifier:
    """Strict verifier: structure, EdDSA signatures by key type, links, order,
    and with ``semantic=True`` trust and taints recomputed."""

    def __init__(
        self,
        keys: Union[str, Mapping[str, Any], Sequence[Identity]],
        *,
        semantic: bool = False,
        sanitizers: Optional[Sequence[str]] = None,
        origins: Optional[Mapping[str, int]] = None,
        strict_origins: bool = False,
        max_entries: Optional[int] = None,
    ) -> None: ...
    def verify(self, passport: Union[Passport, str]) -> Passport:
        """The verified passport; raises ``VerificationError`` (``kind``, ``index``)."""
    def verify_json(self, text: str) -> Passport:
        """Verifies a serialized passport."""

class Flow:
    """Native handle to a logical flow (see ``kest_rs.Flow``)."""

    def __init__(self, *, user: Optional[str] = None, agent: Optional[str] = None, task: Optional[str] = None) -> None: ...
    @staticmethod
    def entry_point(origin: str = "user_input") -> "Flow": ...
    @staticmethod
    def from_passport(passport: Passport) -> "Flow": ...
    def passport(self) -> Passport: ...
    def tips(self) -> List[str]: ...
    def fork(self) -> "Flow": ...
    def join(self, *branches: "Flow") -> None: ...
    @property
    def user(self) -> Optional[str]: ...
    @property
    def agent(self) -> Optional[str]: ...
    @property
    def task(self) -> Optional[str]: ...
    def __len__(self) -> int: ...

class Hook:
    """A validated protected operation (built by ``kest_verified``)."""

    def __init__(
        self,
        operation: str,
        policies: Sequence[str],
        *,
        source_type: Optional[str] = None,
        added_taints: Sequence[str] = ...,
        removed_taints: Sequence[str] = ...,
        trust_override: Optional[int] = None,
        classification: str = "system",
        action: Optional[str] = None,
        scope_name: Optional[str] = None,
        user: Optional[str] = None,
        agent: Optional[str] = None,
        task: Optional[str] = None,
        resource_id: Optional[str] = None,
        resource_attr: Optional[Mapping[str, Any]] = None,
        identity: Optional[Identity] = None,
        engine: Optional[Engine] = None,
        hash_output: bool = False,
    ) -> None: ...
    @property
    def operation(self) -> str: ...
    @property
    def hash_output(self) -> bool:
        """Whether entries record ``content_hash`` of the return value."""
    def call(
        self,
        flow: Flow,
        func: Any,
        args: Tuple[Any, ...],
        kwargs: Optional[Dict[str, Any]] = None,
        attributes: Optional[Dict[str, Any]] = None,
        persisted: Sequence[str] = ...,
    ) -> Any:
        """Policies, then ``func(*args, **kwargs)``, then the signed entry."""
    def start(self, flow: Flow, attributes: Optional[Dict[str, Any]] = None, persisted: Sequence[str] = ...) -> "AsyncCall":
        """Evaluates the policies of an async call; raises on refusal."""

class AsyncCall:
    """An async call whose policies allowed it; finish it exactly once."""

    def succeeded(self, result: Any = None) -> None:
        """Records the entry (hashing ``result`` with ``hash_output``); raises
        ``UnrecordedError`` if it cannot, ``KestError(kind="hash")`` for a
        result that is not JSON (recorded as failed)."""
    def failed(self, error: BaseException) -> None:
        """Records a ``failed_execution`` entry."""
    def cancelled(self) -> None:
        """Records a ``failed_execution`` + ``cancelled`` entry."""

class MemoryCache:
    """In-memory bounded cache with TTLs (claim checks)."""

    def __init__(self) -> None: ...
    def __len__(self) -> int: ...

class RedisCache:
    """Claim-check cache on a Redis server (``SET PX`` / ``GET`` / ``DEL``);
    connects at construction (``lazy=True``: at first use). Unreachable or
    slow: ``BaggageError(kind="cache_unavailable")`` at the call that needs it."""

    def __init__(
        self,
        url: str,
        *,
        connection_timeout: Optional[float] = None,
        command_timeout: Optional[float] = None,
        lazy: bool = False,
    ) -> None: ...
    @property
    def name(self) -> str:
        """The URL without credentials."""

class Propagator:
    """Packs flows into ``baggage`` headers and reads them back."""

    def __init__(
        self,
        *,
        threshold: Optional[int] = None,
        cache: Union[MemoryCache, "RedisCache", None] = None,
        claim_ttl: Optional[float] = None,
        allow_tip_subset: bool = False,
        max_age: Optional[float] = 300.0,
        forward_jwt: bool = False,
    ) -> None: ...
    def inject(self, flow: Flow, baggage: Optional[str] = None) -> str:
        """The header value carrying ``flow`` (other members kept)."""
    def extract(self, baggage: Optional[str], verifier: PassportVerifier, *, peer: Optional[str] = None) -> Flow:
        """The verified, bound flow of a header (raises ``BaggageError``)."""

def sign_entry(
    identity: Identity,
    operation: str,
    *,
    parents: Optional[Passport] = None,
    source_type: Optional[str] = None,
    added_taints: Sequence[str] = ...,
    removed_taints: Sequence[str] = ...,
    trust_override: Optional[int] = None,
    classification: str = "system",
    labels: Optional[Mapping[str, str]] = None,
    metadata: Any = None,
) -> str:
    """Signs one entry on the tips of ``parents`` (verified) or as a root; returns the JWS."""

def configure(
    identity: Optional[Identity] = None,
    engine: Optional[Engine] = None,
    *,
    enterprise_policies: Optional[Sequence[str]] = None,
    platform_policies: Optional[Sequence[str]] = None,
    app_policies: Optional[Sequence[str]] = None,
    deviations: Optional[Sequence[Mapping[str, Any]]] = None,
    origins: Optional[Mapping[str, int]] = None,
    default_root_origin: Optional[str] = None,
    cache_ttl: Optional[float] = None,
    app_name: Optional[str] = None,
    allow_fully_deviated: Optional[bool] = None,
    clear: bool = False,
) -> None:
    """Configures the process runtime; unset parameters keep their values.
    No default identity: protected calls without one raise ``ConfigurationError``."""

def invalidate_policy_cache() -> None:
    """Drops every cached policy decision."""

def parse_baggage(header: str) -> List[Tuple[str, str]]:
    """The members of a ``baggage`` header (decoded values)."""

import os
