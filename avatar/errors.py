"""Typed errors. Each knows its HTTP status and a stable machine-readable code.

Everything a user can cause raises an ``AvatarError`` subclass; the CLI prints its message and exits
non-zero, the HTTP layer turns it into ``{"error": {"code", "message"}}`` with ``status``.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager


class AvatarError(Exception):
    """Base of every error the product reports to a user."""

    code = "error"
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def as_dict(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the answer carries besides the JSON body."""
        return {}


class InvalidAudioError(AvatarError):
    """The bytes are empty, corrupt, truncated or not decodable audio."""

    code = "invalid_audio"
    status = 400


class InvalidImageError(AvatarError):
    """The photo cannot be decoded as an image."""

    code = "invalid_image"
    status = 400


class InvalidRequestError(AvatarError):
    """A request is missing a field or has a malformed one."""

    code = "invalid_request"
    status = 422


class UnsupportedMediaTypeError(AvatarError):
    code = "unsupported_media_type"
    status = 415


class PayloadTooLargeError(AvatarError):
    code = "payload_too_large"
    status = 413


class NoSpeechError(AvatarError):
    """The audio decodes, but nobody says anything in it."""

    code = "no_speech"
    status = 422


class NoFaceError(AvatarError):
    """The photo holds no face the talking head can animate."""

    code = "no_face"
    status = 422


class UnknownPersonaError(AvatarError):
    code = "unknown_persona"
    status = 404


class NotFoundError(AvatarError):
    code = "not_found"
    status = 404


class NotReadyError(AvatarError):
    """The models are still loading, or one failed to load."""

    code = "not_ready"
    status = 503

    def __init__(self, message: str, retry_after_seconds: int | None = None) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds  # while loading: when to ask again

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after_seconds is None else {"Retry-After": str(self.retry_after_seconds)}


class BusyError(AvatarError):
    """Too many requests are already waiting for the models; the client should retry later."""

    code = "busy"
    status = 503

    def __init__(self, message: str, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class SessionStoreUnavailableError(AvatarError):
    """The shared session store (Redis) does not answer; the client may retry once it is back."""

    code = "session_store_unavailable"
    status = 503
    retry_after_seconds = 5

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


class StorageFullError(AvatarError):
    """The output folder's disk is full (or read-only): nothing can be written until space is freed."""

    code = "storage_full"
    status = 503
    retry_after_seconds = 30

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_seconds)}


STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS})


@contextmanager
def storage_faults(where: str) -> Iterator[None]:
    """Name a full or read-only disk met while writing ``where`` (StorageFullError, 503 with Retry-After)
    instead of letting the ``OSError`` become a 500: it is the machine's state, not a bug, and it passes."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in STORAGE_ERRNOS:
            raise
        what = "read-only" if exc.errno == errno.EROFS else "full"
        raise StorageFullError(
            f"The disk of {where} is {what} ({exc.strerror}); nothing was kept. The oldest results are being "
            f"removed; retry in about {StorageFullError.retry_after_seconds} s."
        ) from exc


class LiveUnavailableError(AvatarError):
    """Live mode is switched off on this server (or it is shutting down)."""

    code = "live_unavailable"
    status = 503


class ModelTimeoutError(AvatarError):
    """A model call ran past its time limit; the model is reported hung until it returns."""

    code = "model_timeout"
    status = 504


class TurnTimeoutError(AvatarError):
    """A turn ran past AVATAR_TURN_TIMEOUT_SECONDS and was stopped."""

    code = "turn_timeout"
    status = 504


class TurnCancelledError(AvatarError):
    """The turn was stopped before it finished: the client asked (DELETE), or a newer turn of the same
    session interrupted it."""

    code = "cancelled"
    status = 409


class ConfigError(AvatarError):
    """A setting is wrong. The message names the setting and the fix."""

    code = "config_error"
    status = 500


class ModelError(AvatarError):
    """A model is missing, failed to load, or failed while running."""

    code = "model_error"
    status = 500


class NoAudioError(ModelError):
    """The speech synthesiser made no sound for a text: it cannot pronounce it (e.g. a script its voice
    does not read). Where the text is the user's own (``/speak``) that is a 422, not a fault."""

    code = "model_error"
