"""Typed exceptions of ``kest_rs``.

Every exception carries a stable, machine-readable ``kind`` (the same kinds
as the Rust crates and the ``kest`` CLI). Families:

- :class:`ConfigurationError` — ``no_identity``, ``no_engine``, ``config``
- :class:`PolicyDeniedError` — ``policy_denied``, ``policy_failed``,
  ``no_policy_evaluated`` (also a ``PermissionError``, like the reference's)
- :class:`VerificationError` — the verifier's kinds (``bad_signature``,
  ``broken_link``, ``malformed_passport``, ...) with the entry ``index``
- :class:`BaggageError` — propagation kinds with ``http_status``
- :class:`IdentityError` — ``identity``, ``identity_not_ready``
- :class:`UnrecordedError` — ``unrecorded``: the operation ran but its entry
  could not be recorded, so its result is withheld
"""

from typing import Any, Optional


class KestError(Exception):
    """Base class of every ``kest_rs`` error; ``kind`` is stable."""

    kind: str

    def __init__(self, message: str, *, kind: str = "kest", **extra: Any) -> None:
        super().__init__(message)
        self.kind = kind
        for name, value in extra.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, {str(self)!r})"


class ConfigurationError(KestError):
    """Invalid configuration or hook parameters; nothing ran."""


class PolicyDeniedError(KestError, PermissionError):
    """A policy denied the call or could not be evaluated; the function did not run.

    ``policy`` and ``tier`` name the refusing policy when there is one.
    """

    policy: Optional[str] = None
    tier: Optional[str] = None


class VerificationError(KestError, ValueError):
    """A passport did not verify; ``index`` is the offending entry (or None)."""

    index: Optional[int] = None


class BaggageError(KestError, ValueError):
    """Baggage could not be injected or extracted; ``http_status`` is what a server answers."""

    http_status: int = 400


class IdentityError(KestError):
    """An identity could not be loaded or cannot sign now."""


class UnrecordedError(KestError):
    """The operation ran but could not be recorded; its result is withheld."""


__all__ = [
    "KestError",
    "ConfigurationError",
    "PolicyDeniedError",
    "VerificationError",
    "BaggageError",
    "IdentityError",
    "UnrecordedError",
]
