"""The exception hierarchy, grouped by what the caller does about an error.

* ``ConfigError``: permanent, the operator must fix the configuration (CLI exit 78).
* ``RetryableError``: transient (network, collector overload, disk full); the caller backs off.
* ``PermanentError``: retrying cannot help (a rejected batch, a corrupt state file); the caller
  accounts for it (quarantine, gap record) and carries on.

Third-party exceptions are converted at the boundary with ``raise ... from exc``.
"""

from __future__ import annotations

EX_CONFIG = 78  # sysexits.h: configuration error


class TailsealError(Exception):
    """Base of every error the agent raises on purpose."""


class ConfigError(TailsealError):
    """The configuration is invalid; ``field`` is the dotted path of the offending key."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}" if field else message)


class RetryableError(TailsealError):
    """A transient failure: try again after a backoff. ``reason`` labels the retry metric."""

    def __init__(
        self, message: str, retry_after: float | None = None, reason: str = "other"
    ) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reason = reason


class PermanentError(TailsealError):
    """A failure that retrying cannot fix."""


class StateError(PermanentError):
    """An on-disk state file (buffer segment, cursor, stream identity) is unusable."""
