"""Kest for Python, on the Rust core (``kest_rs``).

Zero Trust execution lineage: every call of a function decorated with
:func:`kest_verified` is checked against its policies *before* it runs, and
a signed entry (RFC 8785 payload, EdDSA JWS) is appended to the flow's
passport *after* it ran. Signing, verification, canonicalization, hashing,
policy evaluation and baggage packing run in Rust with the GIL released;
keys stay in Rust.

The current flow lives in a :class:`contextvars.ContextVar`: nested
protected calls chain, asyncio tasks and threads each follow their own flow
(a task or thread that inherits a flow forks it on its first protected call,
so branches never write into each other).

Quick start::

    import kest_rs

    kest_rs.configure(identity=kest_rs.StaticIdentity.from_seed("spiffe://demo/agent", b"\\x01" * 32),
                      engine=kest_rs.MockEngine())

    @kest_rs.kest_verified(policy="allow", source_type="user_input")
    def ingest(text):
        return text.upper()

    with kest_rs.Flow() as flow:
        ingest("hello")
    verified = kest_rs.PassportVerifier([identity]).verify(flow.passport())
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import os
import threading
from asyncio import CancelledError
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, TypeVar, Union

from kest_rs._errors import (
    BaggageError,
    ConfigurationError,
    IdentityError,
    KestError,
    PolicyDeniedError,
    UnrecordedError,
    VerificationError,
)
from kest_rs import _native
from kest_rs._native import (
    RUNTIME_VERSION,
    AsyncCall,
    CedarAgentEngine,
    CedarEngine,
    Engine,
    Flow as _NativeFlow,
    Hook,
    Identity,
    LocalIdentity,
    MemoryCache,
    MockEngine,
    OpaEngine,
    Passport,
    PassportVerifier,
    Propagator,
    RedisCache,
    RegoEngine,
    RoutedEngine,
    StaticIdentity,
    configure,
    invalidate_policy_cache,
    parse_baggage,
    sign_entry,
)

try:  # the C accelerator; falls back to the public API
    from _asyncio import _get_running_loop  # type: ignore[import-not-found]
    from _asyncio import current_task as _current_task  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover
    from asyncio import _get_running_loop  # type: ignore[attr-defined,no-redef]
    from asyncio import current_task as _current_task  # type: ignore[no-redef]

__version__ = RUNTIME_VERSION

# Entry and claim-check ids come from a thread-local CSPRNG in Rust, which
# is not reseeded on fork by itself: a forked child (multiprocessing,
# pre-forking servers) reseeds it so it never repeats its parent's ids.
# Create remote engines and Redis caches after forking: their I/O threads
# do not survive a fork.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_native._reseed_after_fork)

F = TypeVar("F", bound=Callable[..., Any])

# The current flow, with the thread and asyncio task that own it:
# (flow, thread id, task or None). A flow is written only by its owner; any
# other thread or task forks it first (fan-out).
_CURRENT: contextvars.ContextVar[Optional[Tuple[_NativeFlow, int, Any]]] = contextvars.ContextVar(
    "kest_rs_flow", default=None
)


_get_ident = threading.get_ident
_NOTHING_PERSISTED: List[str] = []


def _owner() -> Tuple[int, Any]:
    loop = _get_running_loop()
    return _get_ident(), (_current_task(loop) if loop is not None else None)


def _flow_for_call() -> Tuple[_NativeFlow, Optional[contextvars.Token]]:
    """The flow a protected call writes into, and a token to undo a new one."""
    current = _CURRENT.get()
    tid, task = _owner()
    if current is None:
        # Outside any flow: the call is a root of its own flow, visible to
        # the calls it makes, and dropped afterwards (as in the Rust hook).
        flow = _NativeFlow()
        return flow, _CURRENT.set((flow, tid, task))
    flow, owner_tid, owner_task = current
    if owner_tid == tid and owner_task is task:
        return flow, None
    forked = flow.fork()
    _CURRENT.set((forked, tid, task))
    return forked, None


class Flow:
    """A logical flow: its passport, tips and identity baggage.

    Use it as a context manager to run protected calls in it::

        with Flow() as flow:
            step_one()
            step_two()
        flow.passport()
    """

    __slots__ = ("_native", "_tokens")

    def __init__(
        self,
        *,
        user: Optional[str] = None,
        agent: Optional[str] = None,
        task: Optional[str] = None,
        _native: Optional[_NativeFlow] = None,
    ) -> None:
        self._native = _native if _native is not None else _NativeFlow(user=user, agent=agent, task=task)
        self._tokens: List[contextvars.Token] = []

    @classmethod
    def entry_point(cls, origin: str = "user_input") -> "Flow":
        """A new flow whose roots score at most ``origin`` (an entry point)."""
        return cls(_native=_NativeFlow.entry_point(origin))

    @classmethod
    def from_passport(cls, passport: Passport) -> "Flow":
        """A flow continuing a *verified* passport at its tips."""
        return cls(_native=_NativeFlow.from_passport(passport))

    @classmethod
    def current(cls) -> Optional["Flow"]:
        """The flow of the current context, if any."""
        current = _CURRENT.get()
        return None if current is None else cls(_native=current[0])

    def passport(self) -> Passport:
        """A copy of the flow's verified passport."""
        return self._native.passport()

    def tips(self) -> List[str]:
        """Where the next entry attaches (hex hashes)."""
        return self._native.tips()

    def fork(self) -> "Flow":
        """A new flow starting where this one is now (fan-out)."""
        return Flow(_native=self._native.fork())

    def join(self, *branches: "Flow") -> None:
        """Merges branches: the next entry names all their tips as parents (fan-in)."""
        self._native.join(*[b._native for b in branches])

    @property
    def user(self) -> Optional[str]:
        return self._native.user

    @property
    def agent(self) -> Optional[str]:
        return self._native.agent

    @property
    def task(self) -> Optional[str]:
        return self._native.task

    def __enter__(self) -> "Flow":
        tid, task = _owner()
        self._tokens.append(_CURRENT.set((self._native, tid, task)))
        return self

    def __exit__(self, *exc: Any) -> None:
        _CURRENT.reset(self._tokens.pop())

    def __len__(self) -> int:
        return len(self._native)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return repr(self._native)


def current_flow() -> Optional[Flow]:
    """The flow of the current context, if any."""
    return Flow.current()


def current_passport() -> Optional[Passport]:
    """The current flow's passport, or None outside any flow."""
    current = _CURRENT.get()
    return None if current is None else current[0].passport()


def current_user() -> Optional[str]:
    """The current flow's end user (``kest.user``)."""
    current = _CURRENT.get()
    return None if current is None else current[0].user


def current_agent() -> Optional[str]:
    """The current flow's agent (``kest.agent``)."""
    current = _CURRENT.get()
    return None if current is None else current[0].agent


def current_task() -> Optional[str]:
    """The current flow's task (``kest.task``)."""
    current = _CURRENT.get()
    return None if current is None else current[0].task


def _mapped(func: Callable[..., Any], context_map: Optional[dict], args: tuple, kwargs: dict):
    """The reference's ``context_map``: call arguments as policy attributes."""
    if not context_map:
        return None, []
    bound = inspect.signature(func).bind(*args, **kwargs)
    bound.apply_defaults()
    attributes: Dict[str, Any] = {}
    persisted: List[str] = []
    for arg_name, config in context_map.items():
        if arg_name not in bound.arguments:
            continue
        if isinstance(config, dict):
            key = config.get("key", arg_name)
            persist = bool(config.get("persist", False))
        else:
            key, persist = config, False
        attributes[key] = bound.arguments[arg_name]
        if persist:
            persisted.append(key)
    return attributes, persisted


def kest_verified(
    policy: Union[str, Sequence[str]],
    engine: Optional[Engine] = None,
    identity: Optional[Identity] = None,
    source_type: Optional[str] = None,
    added_taints: Optional[Sequence[str]] = None,
    removed_taints: Optional[Sequence[str]] = None,
    trust_override: Optional[int] = None,
    context_map: Optional[dict] = None,
    *,
    origin: Optional[str] = None,
    classification: str = "system",
    operation: Optional[str] = None,
    action: Optional[str] = None,
    user: Optional[str] = None,
    agent: Optional[str] = None,
    task: Optional[str] = None,
    resource_id: Optional[str] = None,
    resource_attr: Optional[dict] = None,
    hash_output: bool = False,
) -> Callable[[F], F]:
    """Puts a sync or async function under the verification hook.

    Before each call every applicable policy (enterprise, platform and
    application tiers from :func:`configure`, then ``policy``) is evaluated
    in Rust; a denial or engine error raises :class:`PolicyDeniedError` and
    the function does not run. After it ran, a signed entry is appended to
    the current flow. If the function raises, a ``failed_execution`` entry
    is recorded and the exception propagates unchanged. ``origin`` is the
    reference's name of ``source_type``. Invalid parameters (an empty policy
    list, removing taints without a sanitizer) raise
    :class:`ConfigurationError` when the decorator is applied.

    ``hash_output=True`` records the SHA-256 of the RFC 8785 form of the
    return value in the entry's ``content_hash`` (as the Rust hook's
    ``hash_output``; the reference always writes ``""``). The value must be
    JSON (None, bool, int, float, str, list, tuple, dict with str keys): a
    value that is not is recorded as a failed execution and the call raises
    :class:`KestError` (``kind="hash"``) instead of returning it.
    """
    policies = [policy] if isinstance(policy, str) else list(dict.fromkeys(policy))
    if source_type is not None and origin is not None and source_type != origin:
        raise ConfigurationError("source_type and origin disagree", kind="config")
    source = source_type if source_type is not None else origin

    def decorator(func: F) -> F:
        name = operation or func.__name__
        hook = Hook(
            name,
            policies,
            source_type=source,
            added_taints=list(added_taints or []),
            removed_taints=list(removed_taints or []),
            trust_override=trust_override,
            classification=classification,
            action=action,
            scope_name=f"{func.__module__}.{func.__qualname__}" if operation is None else None,
            user=user,
            agent=agent,
            task=task,
            resource_id=resource_id,
            resource_attr=resource_attr,
            identity=identity,
            engine=engine,
            hash_output=hash_output,
        )

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                attributes, persisted = _mapped(func, context_map, args, kwargs)
                flow, token = _flow_for_call()
                try:
                    call = hook.start(flow, attributes, persisted)
                    try:
                        result = await func(*args, **kwargs)
                    except CancelledError:
                        call.cancelled()
                        raise
                    except BaseException as error:
                        call.failed(error)
                        raise
                    call.succeeded(result)
                    return result
                finally:
                    if token is not None:
                        _CURRENT.reset(token)

            async_wrapper.__kest_hook__ = hook  # type: ignore[attr-defined]
            return async_wrapper  # type: ignore[return-value]

        call = hook.call
        get_current = _CURRENT.get

        @functools.wraps(func)
        def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
            if context_map:
                attributes, persisted = _mapped(func, context_map, args, kwargs)
            else:
                attributes, persisted = None, _NOTHING_PERSISTED
            if get_current() is None:
                # The common case, kept short: a root call of its own flow.
                flow = _NativeFlow()
                loop = _get_running_loop()
                token = _CURRENT.set(
                    (flow, _get_ident(), _current_task(loop) if loop is not None else None)
                )
            else:
                flow, token = _flow_for_call()
            try:
                return call(flow, func, args, kwargs or None, attributes, persisted)
            finally:
                if token is not None:
                    _CURRENT.reset(token)

        sync_wrapper.__kest_hook__ = hook  # type: ignore[attr-defined]
        return sync_wrapper  # type: ignore[return-value]

    return decorator


_DEFAULT_PROPAGATOR: Optional[Propagator] = None


def default_propagator() -> Propagator:
    """The propagator used by :func:`inject` / :func:`extract` when none is given."""
    global _DEFAULT_PROPAGATOR
    if _DEFAULT_PROPAGATOR is None:
        _DEFAULT_PROPAGATOR = Propagator()
    return _DEFAULT_PROPAGATOR


def set_default_propagator(propagator: Propagator) -> None:
    """Replaces the default propagator (e.g. one with a claim-check cache)."""
    global _DEFAULT_PROPAGATOR
    _DEFAULT_PROPAGATOR = propagator


def inject(
    baggage: Optional[str] = None,
    *,
    flow: Optional[Flow] = None,
    propagator: Optional[Propagator] = None,
) -> str:
    """The ``baggage`` header value carrying ``flow`` (default: the current flow).

    The passport is packed in three tiers (inline, zlib, claim check);
    ``kest.chain_tip`` names its tips; members of ``baggage`` that are not
    Kest's are kept. Outside any flow raises :class:`ConfigurationError`.
    """
    native = flow._native if flow is not None else None
    if native is None:
        current = _CURRENT.get()
        if current is None:
            raise ConfigurationError("inject: no current flow", kind="config")
        native = current[0]
    return (propagator or default_propagator()).inject(native, baggage)


def extract(
    baggage: Optional[str],
    verifier: PassportVerifier,
    *,
    propagator: Optional[Propagator] = None,
    peer: Optional[str] = None,
) -> Flow:
    """The flow carried by a ``baggage`` header, verified and bound.

    Raises :class:`BaggageError` (with ``kind`` and ``http_status``) for a
    header that does not decode, a claim check that does not resolve, a
    passport that does not verify or tips that do not match — never an
    empty passport. A header with no passport key is a new, empty flow.
    """
    return Flow(_native=(propagator or default_propagator()).extract(baggage, verifier, peer=peer))


def inject_headers(
    headers: Optional[Dict[str, str]] = None,
    *,
    flow: Optional[Flow] = None,
    propagator: Optional[Propagator] = None,
) -> Dict[str, str]:
    """``headers`` (a new dict) with the ``baggage`` header set for ``flow``
    (for httpx: ``client.get(url, headers=kest_rs.inject_headers())``)."""
    out = dict(headers or {})
    existing = next((v for k, v in out.items() if k.lower() == "baggage"), None)
    for k in [k for k in out if k.lower() == "baggage"]:
        del out[k]
    out["baggage"] = inject(existing, flow=flow, propagator=propagator)
    return out


def extract_asgi(scope: Dict[str, Any], verifier: PassportVerifier, *, propagator: Optional[Propagator] = None) -> Flow:
    """The flow carried by an ASGI request's ``baggage`` header (see :func:`extract`)."""
    values = [v.decode("latin-1") for k, v in scope.get("headers", []) if k.lower() == b"baggage"]
    return extract(",".join(values) if values else None, verifier, propagator=propagator)


def httpx_event_hook(*, propagator: Optional[Propagator] = None) -> Callable[[Any], None]:
    """An httpx request event hook writing the current flow into ``baggage``::

        client = httpx.Client(event_hooks={"request": [kest_rs.httpx_event_hook()]})

    Members of an existing ``baggage`` header that are not Kest's are kept.
    A request sent outside any flow raises :class:`ConfigurationError`
    (nothing is sent without lineage). For ``httpx.AsyncClient`` use
    :func:`httpx_async_event_hook`.
    """

    def hook(request: Any) -> None:
        request.headers["baggage"] = inject(request.headers.get("baggage"), propagator=propagator)

    return hook


def httpx_async_event_hook(*, propagator: Optional[Propagator] = None) -> Callable[[Any], Any]:
    """:func:`httpx_event_hook` for ``httpx.AsyncClient``."""
    sync = httpx_event_hook(propagator=propagator)

    async def hook(request: Any) -> None:
        sync(request)

    return hook


class KestMiddleware:
    """ASGI middleware (FastAPI, Starlette, any ASGI app): restores the flow
    carried by the request's ``baggage`` header (inline, compressed or claim
    check), verifies its passport with ``verifier``, binds it to the
    request (``kest.chain_tip``, age) and runs the app inside it, so
    protected calls in the handler extend the caller's passport.

    Fail closed; the app never runs when:

    - the header does not decode, a claim check does not resolve, the
      passport does not verify or its tips do not match: the
      :class:`BaggageError`'s ``http_status`` (400, 403, 409/424 …) with a
      JSON body ``{"error": kind, "message": …}``;
    - the request carries no passport and ``entry_point`` is not set:
      403 ``missing_lineage`` (an inner service). With ``entry_point`` (an
      origin such as ``"user_input"``) such a request starts a new flow
      whose roots score at most that origin — authenticate callers before
      this middleware.

    Non-HTTP scopes (``lifespan``) pass through unchanged::

        app = FastAPI()
        app.add_middleware(kest_rs.KestMiddleware, verifier=verifier)
    """

    def __init__(
        self,
        app: Any,
        verifier: PassportVerifier,
        *,
        propagator: Optional[Propagator] = None,
        entry_point: Optional[str] = None,
    ) -> None:
        self.app = app
        self.verifier = verifier
        self.propagator = propagator
        self.entry_point = entry_point

    async def __call__(self, scope: Dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        try:
            flow = extract_asgi(scope, self.verifier, propagator=self.propagator)
        except BaggageError as error:
            await _reject(scope, send, error.http_status, error.kind, str(error))
            return
        if len(flow) == 0:
            if self.entry_point is None:
                await _reject(scope, send, 403, "missing_lineage", "the request carries no passport")
                return
            flow = Flow.entry_point(self.entry_point)
        with flow:
            await self.app(scope, receive, send)


async def _reject(scope: Dict[str, Any], send: Any, status: int, kind: str, message: str) -> None:
    import json

    if scope.get("type") == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    body = json.dumps({"error": kind, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


# Reference names.
LocalEd25519Provider = LocalIdentity
MockPolicyEngine = MockEngine
RegoLocalEngine = RegoEngine
CedarLocalEngine = CedarEngine
OPAPolicyEngine = OpaEngine
CedarPolicyEngine = CedarAgentEngine

__all__ = [
    "AsyncCall",
    "BaggageError",
    "CedarAgentEngine",
    "CedarEngine",
    "CedarLocalEngine",
    "CedarPolicyEngine",
    "ConfigurationError",
    "Engine",
    "Flow",
    "Hook",
    "Identity",
    "IdentityError",
    "KestError",
    "KestMiddleware",
    "LocalEd25519Provider",
    "LocalIdentity",
    "MemoryCache",
    "MockEngine",
    "MockPolicyEngine",
    "OPAPolicyEngine",
    "OpaEngine",
    "Passport",
    "PassportVerifier",
    "PolicyDeniedError",
    "Propagator",
    "RedisCache",
    "RegoEngine",
    "RegoLocalEngine",
    "RoutedEngine",
    "StaticIdentity",
    "UnrecordedError",
    "VerificationError",
    "configure",
    "current_agent",
    "current_flow",
    "current_passport",
    "current_task",
    "current_user",
    "default_propagator",
    "extract",
    "extract_asgi",
    "inject",
    "httpx_async_event_hook",
    "httpx_event_hook",
    "inject_headers",
    "invalidate_policy_cache",
    "kest_verified",
    "parse_baggage",
    "set_default_propagator",
    "sign_entry",
]
