"""Checkpoints: safetensors weights plus a JSON model card, written atomically, verified on load.

A checkpoint is ``<name>.safetensors`` beside ``<name>.json``. The card carries everything needed to
rebuild and trust the model: architecture config, preprocessing, thresholds or class names, the data
and split it was trained on, the exact recipe command, hardware, wall time, measured metrics and the
sha256 of the weights. An extractor may have a third file, ``<name>.background.safetensors``: the
background bank of its writer-dependent decisions (named, with its sha256, in the card). Names such as ``"default"`` resolve to the checkpoints shipped with the package.
Nothing is pickled.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np
from safetensors import SafetensorError

from signver_torch.cards import MODULES, ModelCard, sha256_file
from signver_torch.errors import CheckpointError

if TYPE_CHECKING:  # torch is imported by the functions that read or write weights: reading a card needs none
    import torch
    from torch import nn

#: The suffix of a checkpoint's background bank, beside its weights (never a checkpoint itself).
BACKGROUND_SUFFIX = ".background.safetensors"
_PACKAGE_DIR = Path(__file__).resolve().parent


def shipped_roots() -> list[Path]:
    """Folders holding shipped checkpoints: inside an installed wheel, or the checkout's ``checkpoints/``."""
    return [root for root in (_PACKAGE_DIR / "_shipped", checkout_dir("checkpoints")) if root is not None and root.is_dir()]


def checkout_dir(name: str) -> Path | None:
    """``name`` beside the package when running from a source checkout (never a stray site-packages folder)."""
    root = _PACKAGE_DIR.parent
    return root / name if (root / "pyproject.toml").is_file() else None


def weights_path(path: str | os.PathLike) -> Path:
    """``x``, ``x.json`` or ``x.safetensors`` → ``x.safetensors`` (other dots in the name are kept)."""
    path = Path(path)
    if path.suffix in (".safetensors", ".json"):
        return path.with_suffix(".safetensors")
    return path.with_name(path.name + ".safetensors")


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk: its module, its name and its two files."""

    module: str
    name: str
    weights: Path

    @property
    def card_path(self) -> Path:
        return _card_path(self.weights)

    def card(self) -> dict[str, Any]:
        return read_card(self.weights)


def shipped_checkpoints(module: str | None = None) -> list[Checkpoint]:
    """Every shipped checkpoint (optionally of one module), first root wins on duplicate names."""
    found: dict[tuple[str, str], Checkpoint] = {}
    for root in shipped_roots():
        for weights in sorted(root.glob("*/*.safetensors")):
            if weights.name.endswith(BACKGROUND_SUFFIX):
                continue
            key = (weights.parent.name, weights.stem)
            if key[0] in MODULES and (module is None or key[0] == module) and key not in found:
                found[key] = Checkpoint(key[0], key[1], weights)
    return list(found.values())


def resolve_checkpoint(module: str, name_or_path: str | os.PathLike) -> Checkpoint:
    """Turn a shipped name (``"default"``) or a ``.safetensors`` path into a :class:`Checkpoint`."""
    if module not in MODULES:
        raise CheckpointError(f"unknown module {module!r}; checkpoints exist for {', '.join(MODULES)}")
    text = os.fspath(name_or_path)
    path = weights_path(text)
    if Path(text).suffix in (".safetensors", ".json") or os.sep in text or path.exists():
        if path.is_dir():
            raise CheckpointError(f"{text}: is a directory; pass the .safetensors file")
        if not path.exists():
            raise CheckpointError(f"{text}: checkpoint file not found")
        return Checkpoint(module, path.stem, path)
    for checkpoint in shipped_checkpoints(module):
        if checkpoint.name == text:
            return checkpoint
    names = ", ".join(c.name for c in shipped_checkpoints(module)) or "none shipped yet"
    raise CheckpointError(f"no shipped {module} checkpoint named {text!r} (available: {names})")


def _card_path(weights: Path) -> Path:
    return weights.with_name(weights.name[: -len(".safetensors")] + ".json")


def read_card(weights: Path) -> dict[str, Any]:
    card_path = _card_path(Path(weights))
    if not card_path.exists():
        raise CheckpointError(f"{card_path}: model card missing (every checkpoint needs its .json card)")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{card_path}: unreadable model card ({error})") from error
    return ModelCard.from_dict(card, str(card_path)).to_dict()


def verified_card(module: str, name_or_path: str | os.PathLike) -> tuple[Checkpoint, dict[str, Any]]:
    """The checkpoint and its card, once the card's module and the weights' sha256 are checked: what every
    load relies on, the torch network's and an exported graph's alike.

    Raises:
        CheckpointError: missing or corrupt files, a card for another module, or a checksum mismatch.
    """
    checkpoint = resolve_checkpoint(module, name_or_path)
    card = checkpoint.card()
    if card.get("module") != module:
        raise CheckpointError(
            f"{checkpoint.weights}: this is a {card.get('module', 'unknown')!r} checkpoint, not a {module!r} one"
        )
    expected = card.get("sha256")
    if not expected:
        raise CheckpointError(f"{checkpoint.card_path}: model card has no sha256 of the weights")
    try:
        actual = sha256_file(checkpoint.weights)
    except OSError as error:
        raise CheckpointError(f"{checkpoint.weights}: cannot read weights ({error.strerror or error})") from error
    if actual != expected:
        raise CheckpointError(
            f"{checkpoint.weights}: sha256 does not match its card (file corrupt or replaced)"
        )
    return checkpoint, card


def load_checkpoint(module: str, name_or_path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load weights and card (:func:`verified_card`).

    Raises:
        CheckpointError: missing or corrupt files, a card for another module, or a checksum mismatch.
    """
    from safetensors.torch import load_file

    checkpoint, card = verified_card(module, name_or_path)
    try:
        state = load_file(str(checkpoint.weights))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{checkpoint.weights}: not a readable safetensors file ({error})") from error
    return state, card


def load_model(
    module: str, name_or_path: str | os.PathLike, build: Callable[[dict[str, Any]], nn.Module]
) -> tuple[nn.Module, dict[str, Any]]:
    """Build the network a checkpoint's card describes (``build(card)``) and load its weights as float32.

    The network is built on the meta device and the weights are assigned, not copied: no time is
    spent on a random initialisation that loading would overwrite (a large part of a command's start-up).
    """
    import torch

    state, card = load_checkpoint(module, name_or_path)
    state = {key: value.float() if value.is_floating_point() else value for key, value in state.items()}
    try:
        with torch.device("meta"):
            model = build(card)
        model.load_state_dict(state, assign=True)
        if any(tensor.is_meta for tensor in chain(model.parameters(), model.buffers())):
            model = build(card)  # a buffer no state dict holds (non-persistent): build for real, copy the weights in
            model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{name_or_path}: weights do not match the card's architecture ({error})") from error
    return model, card


def save_checkpoint(
    path: str | os.PathLike,
    state_dict: Mapping[str, torch.Tensor],
    card: Mapping[str, Any],
    *,
    dtype: torch.dtype | None = None,
    background: bytes | None = None,
) -> Path:
    """Write ``path`` (``.safetensors``) and its card atomically; returns the weights path.

    Floating tensors are stored as ``dtype`` when given (fp16 halves the size). The card gains
    ``sha256`` and ``weights_dtype``. Each file is written to a temporary name and renamed, so a crash
    never leaves a half-written checkpoint under the real name. ``background`` (from
    :func:`encode_background`) is written beside them in the same way.
    """
    from safetensors.torch import save_file

    weights = weights_path(path)
    ModelCard.from_dict(card, str(_card_path(weights)))  # a card that cannot be read back is refused before writing
    weights.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        key: (value.detach().to(dtype) if dtype is not None and value.is_floating_point() else value.detach())
        .contiguous()
        .cpu()
        for key, value in state_dict.items()
    }
    with _temporary_beside(weights) as tmp_weights, _temporary_beside(_card_path(weights)) as tmp_card:
        save_file(tensors, str(tmp_weights))
        full_card = {**card, "sha256": sha256_file(tmp_weights), "weights_dtype": str(dtype or "as trained").replace("torch.", "")}
        tmp_card.write_text(json.dumps(ModelCard.from_dict(full_card).to_dict(), indent=2) + "\n", encoding="utf-8")
        _replace_with_background(weights, [(tmp_weights, weights), (tmp_card, _card_path(weights))], background)
    return weights


def _replace_with_background(weights: Path, moves: list[tuple[Path, Path]], background: bytes | None) -> None:
    with contextlib.ExitStack() as stack:
        if background is not None:
            tmp = stack.enter_context(_temporary_beside(background_path(weights)))
            tmp.write_bytes(background)
            moves = [(tmp, background_path(weights)), *moves]
        _replace_together(moves)


def background_path(weights: str | os.PathLike) -> Path:
    """Where the background bank of checkpoint ``weights`` (``.safetensors``, or an exported ``.onnx``) lives."""
    weights = Path(weights)
    return weights.with_name(weights.stem + BACKGROUND_SUFFIX)


def encode_background(embeddings: torch.Tensor, metadata: Mapping[str, str]) -> tuple[bytes, str]:
    """A background bank ``(N, D)`` as safetensors bytes, with their sha256 (for the card, before any
    file is written: :func:`save_checkpoint` and :func:`write_card` write it with the checkpoint)."""
    from safetensors.torch import save as save_tensors

    data = save_tensors({"embeddings": embeddings.float().contiguous().cpu()}, metadata=dict(metadata))
    return data, hashlib.sha256(data).hexdigest()


def read_background(weights: str | os.PathLike, sha256: str) -> np.ndarray:
    """The background bank beside ``weights`` as an ``(N, D)`` float32 array, checked against the sha256 its card
    names (read without torch: the exported verification path has none)."""
    from safetensors.numpy import load_file

    path = background_path(weights)
    if not path.is_file():
        raise CheckpointError(f"{path}: background bank missing (the card's decision rule needs it; rerun its calibration)")
    if sha256_file(path) != sha256:
        raise CheckpointError(f"{path}: sha256 does not match the card's decision.background (a file of another calibration)")
    try:
        return load_file(str(path))["embeddings"]
    except (SafetensorError, KeyError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable background bank ({error})") from error


def update_card(weights: str | os.PathLike, **fields: Any) -> dict[str, Any]:
    """Add or replace ``fields`` in the card of ``weights`` (atomically; the weights are untouched)."""
    card = {**read_card(Path(weights)), **fields}
    write_card(weights, card)
    return card


def record_metrics(module: str, checkpoint: str | os.PathLike, report: Mapping[str, Any], command: str,
                   record_as: str | None = None, data_command: str | None = None) -> dict[str, Any]:
    """File what ``signver evaluate`` measured in the checkpoint's card, without the report's
    provenance (``checkpoint``, ``checkpoint_sha256``): as its ``metrics``, with the ``command`` that
    measured them (what shipped cards hold), or with ``record_as`` under ``extra_metrics[record_as]``,
    with the command and the one that made the data (``data_command``) when known. Returns the card.

    Raises:
        CheckpointError: the weights changed while they were evaluated.
    """
    found = resolve_checkpoint(module, checkpoint)
    card = found.card()
    if report.get("checkpoint_sha256", card.get("sha256")) != card.get("sha256"):
        raise CheckpointError(f"{found.weights}: changed while it was evaluated; not recorded")
    metrics = {key: value for key, value in report.items() if key not in ("checkpoint", "checkpoint_sha256")}
    if not record_as:
        return update_card(found.weights, metrics=metrics, metrics_command=command)
    return update_card(found.weights, extra_metrics={**card.get("extra_metrics", {}), record_as: {
        "metrics": metrics, "command": command, "data_command": data_command}})


def write_card(weights: str | os.PathLike, card: Mapping[str, Any], background: bytes | None = None) -> None:
    """Replace the card of ``weights`` with ``card`` (atomically; the weights are untouched), and its
    background bank with ``background`` when given."""
    typed = ModelCard.from_dict(card, str(_card_path(Path(weights))))  # checked, and in the current schema
    with _temporary_beside(_card_path(Path(weights))) as tmp:
        tmp.write_text(json.dumps(typed.to_dict(), indent=2) + "\n", encoding="utf-8")
        _replace_with_background(Path(weights), [(tmp, _card_path(Path(weights)))], background)


@contextmanager
def _temporary_beside(target: Path) -> Iterator[Path]:
    """A temporary file in ``target``'s folder (same file system, so a rename is atomic), removed afterwards."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


def _replace_together(moves: list[tuple[Path, Path]]) -> None:
    """Rename each written temporary file onto its target. If a rename fails, the targets already
    replaced get their previous files back, so a failed save leaves the previous checkpoint whole.
    (A kill between the renames can pair new weights with the old card: loading refuses that pair,
    as the card's sha256 no longer matches.)"""
    previous: list[tuple[Path, Path | None]] = []
    try:
        for _, target in moves:
            backup = None
            if target.exists():
                backup = target.with_name(f".{target.name}.previous")
                backup.unlink(missing_ok=True)
                try:
                    os.link(target, backup)
                except OSError:  # file systems without hard links
                    shutil.copy2(target, backup)
            previous.append((target, backup))
        umask = os.umask(0)
        os.umask(umask)
        done = []
        try:
            for tmp, target in moves:
                tmp.chmod(0o666 & ~umask)  # mkstemp makes 0600; a checkpoint is as readable as any new file
                os.replace(tmp, target)
                done.append(target)
        except BaseException:
            for target, backup in previous:
                if target in done:
                    with contextlib.suppress(OSError):  # restore what can be; the original error is raised
                        if backup is None:
                            target.unlink(missing_ok=True)
                        else:
                            os.replace(backup, target)
            raise
    finally:
        for _, backup in previous:
            if backup is not None:
                backup.unlink(missing_ok=True)


def iter_cards(module: str | None = None) -> Iterator[tuple[Checkpoint, dict[str, Any] | str]]:
    """Yield each shipped checkpoint with its card, or the error text if the card is unreadable."""
    for checkpoint in shipped_checkpoints(module):
        try:
            yield checkpoint, checkpoint.card()
        except CheckpointError as error:
            yield checkpoint, str(error)
