"""Typed errors. Every error a user can fix is a :class:`VigilError`.

The CLI prints these without a traceback; the model server maps them to HTTP codes.
"""

from __future__ import annotations


class VigilError(Exception):
    """A problem with input, configuration or environment that the user can fix."""


class ConfigError(VigilError):
    """A configuration file or environment variable is invalid."""


class DataError(VigilError):
    """Input data cannot be read or does not follow the data contract."""

    def __init__(self, message: str, *, file: str | None = None, column: str | None = None):
        where = ", ".join(
            p for p in (f"file {file}" if file else "", f"column {column}" if column else "") if p
        )
        super().__init__(f"{where}: {message}" if where else message)
        self.file = file
        self.column = column


class ValidationFailed(VigilError):
    """The validation gate rejected a data set; ``result`` holds the details."""

    def __init__(self, message: str, result: object | None = None):
        super().__init__(message)
        self.result = result


class FeatureStoreError(VigilError):
    """The feature store is misconfigured or unreachable."""


class RegistryError(VigilError):
    """The model registry cannot satisfy a request (unknown model, version or alias)."""


class ModelIntegrityError(RegistryError):
    """A model artifact does not match the sha256 recorded in the registry."""
