"""Exceptions raised by signver-torch.

Every error a user can cause (a bad image, a missing accelerator, a wrong checkpoint) is a
:class:`SignVerError`, so callers can catch one type and the CLI can print one line.
"""

from __future__ import annotations

from typing import Sequence


class SignVerError(Exception):
    """Base class of every error signver-torch raises on purpose."""


class ImageLoadError(SignVerError, ValueError):
    """An image could not be read: missing, empty, truncated, not an image, or too large."""


class AcceleratorUnavailableError(SignVerError, RuntimeError):
    """The requested accelerator (or number of devices) is not present on this machine."""


class CheckpointError(SignVerError, ValueError):
    """A checkpoint name, file or model card is missing, corrupt or does not match the model."""


class BlankSignatureError(SignVerError, ValueError):
    """A crop holds no ink to embed (blank, or uniform); ``indices`` are the blank batch items."""

    def __init__(self, message: str, indices: Sequence[int] = ()) -> None:
        super().__init__(message)
        self.indices = list(indices)


class DataError(SignVerError, ValueError):
    """A dataset folder, annotation file or split specification is malformed."""


class NotFoundError(SignVerError, LookupError):
    """A person, document, page or signature asked for by id is not stored (HTTP 404 in the service)."""


class BackendUnavailableError(SignVerError, ImportError):
    """An inference backend was asked for whose runtime is not installed (the message names the extra)."""


class ExportError(SignVerError, RuntimeError):
    """An exported graph could not be written, read, or does not agree with the torch model it came from."""
