"""Typed exceptions. Every error meant for a person derives from :class:`AlwbError`."""

from __future__ import annotations


class AlwbError(Exception):
    """An error with a one-line message for the user (the CLI prints it and exits non-zero)."""


class ConfigError(AlwbError):
    """A setting has a value it cannot take; the message names the setting and the allowed values."""


class ProjectError(AlwbError):
    """The project folder or its store is missing or unusable."""


class ImageRejected(AlwbError):
    """An image could not be read; ``reason`` is a short, specific explanation."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ManifestError(AlwbError):
    """A CSV manifest or answers file is malformed."""


class LabelError(AlwbError):
    """A label file or batch was refused; nothing was written."""


class EmptyPoolError(AlwbError):
    """There is nothing left to query."""


class NoLabelsError(AlwbError):
    """Training needs labels that are not there yet."""


class UnsafeModelFileError(AlwbError):
    """A model file would need arbitrary unpickling, or fails validation."""


class StoreUnavailable(ProjectError):
    """The store's server cannot be reached right now (stopped, restarting, network gone). The call that raised it
    did not report success: its transaction was rolled back (only a COMMIT cut off may have landed), and the same
    call can be tried again once the server is back (a repeated label call writes nothing twice)."""

    def __init__(self, location: str, reason: str) -> None:
        from .redaction import redact

        location, reason = redact(location), redact(reason)
        super().__init__(f"cannot reach the PostgreSQL store {location}: {reason}")
        self.location = location
        self.reason = reason
