"""The LightGBM flavor: how a model is stored (LightGBM's own text format, never a pickle) and
how stored bytes become a booster again (sha256 and feature names checked)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import lightgbm

from vigil.errors import ModelIntegrityError

#: The model file in a registered version's folder, and the format the card names.
MODEL_FILE: Final = "model.txt"
MODEL_FORMAT: Final = "lightgbm-text"


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_text(model: lightgbm.Booster | Path | str) -> str:
    """The text format of a booster, of a LightGBM text-format file, or the text itself."""
    if isinstance(model, lightgbm.Booster):
        return model.model_to_string()
    if isinstance(model, Path):
        try:
            return model.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"cannot read LightGBM model file {model}: {e}") from e
    return model


def parse_booster(text: str, *, what: str, error: type[Exception]) -> lightgbm.Booster:
    """A booster from LightGBM's text format (the only format Vigil stores)."""
    if not text.startswith("tree\n"):
        raise error(f"{what} is not in LightGBM's text model format")
    try:
        return lightgbm.Booster(model_str=text)
    except lightgbm.basic.LightGBMError as e:
        raise error(f"{what}: LightGBM cannot parse the model text: {e}") from e


def verified_booster(
    data: bytes, *, sha256: str, feature_names: Sequence[str], what: str, source: str
) -> lightgbm.Booster:
    """The booster in ``data`` (the bytes of :data:`MODEL_FILE` downloaded from ``source``),
    refused with :class:`ModelIntegrityError` unless their sha256 and the booster's feature
    names are the ones the registry recorded."""
    actual = sha256_hex(data)
    if actual != sha256:
        raise ModelIntegrityError(
            f"refusing to load {what}: sha256 of {MODEL_FILE} is {actual}, the registry "
            f"recorded {sha256} (the artifact at {source} was modified or corrupted)"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ModelIntegrityError(f"{what}: {MODEL_FILE} is not UTF-8 text") from e
    booster = parse_booster(text, what=what, error=ModelIntegrityError)
    if tuple(booster.feature_name()) != tuple(feature_names):
        raise ModelIntegrityError(
            f"{what}: booster features {booster.feature_name()} differ from the "
            f"registry's {list(feature_names)}"
        )
    return booster
