"""Option sets that several ``signver`` commands share, and what their handlers share.

Each function adds one set of options to a command's parser; the help texts name no module (the
module-specific options of ``evaluate`` and ``calibrate`` come from the registry, ``cli/evaluate.py``).
"""

from __future__ import annotations

import argparse

from signver_torch.errors import SignVerError
from signver_torch.io import DEFAULT_MAX_PAGES, PDF_DPI

#: The exit code of a command that failed: a ``SignVerError``, or a handler that reported its own failures.
EXIT_ERROR = 1

#: Lists of at least this many queries show a progress bar on stderr.
PROGRESS_FROM = 10


def json_flag(sub: argparse.ArgumentParser, help: str = "print one JSON object") -> None:
    """``--json``: results as JSON on stdout, for tools to read."""
    sub.add_argument("--json", action="store_true", help=help)


def quiet_flag(sub: argparse.ArgumentParser, help: str | None = "no progress bar on stderr") -> None:
    """``--quiet``: no progress on stderr."""
    sub.add_argument("--quiet", action="store_true", help=help)


def checkpoint_option(sub: argparse.ArgumentParser, help: str = "shipped name or .safetensors path") -> None:
    """``--checkpoint``: the one checkpoint a command loads, by shipped name or path."""
    sub.add_argument("--checkpoint", default="default", help=help)


def device_option(sub: argparse.ArgumentParser) -> None:
    """``--device``: where a single model runs."""
    sub.add_argument("--device", help="cpu, cuda, ... (default: the best present)")


def checkpoints(sub: argparse.ArgumentParser, detector: bool = False) -> None:
    """The pipeline's checkpoints: ``--extractor``, ``--cleaner`` and with ``detector`` ``--detector``."""
    sub.add_argument("--extractor", default="default", help="extractor checkpoint (name or path)")
    sub.add_argument("--cleaner", default="default", help="cleaner checkpoint (name or path)")
    if detector:
        sub.add_argument("--detector", default="default", help="detector checkpoint (name or path)")


def backend_option(sub: argparse.ArgumentParser) -> None:
    """``--backend``: what runs the networks; ``auto`` (the default) never exports, so it is torch until exports exist."""
    from signver_torch.runtime import BACKENDS

    sub.add_argument("--backend", choices=("auto", *BACKENDS), default="auto",
                     help="auto (default): per module the fastest measured backend installed that has an export of "
                     "the checkpoint (an export folder, or the cache), else torch; torch; onnxruntime or openvino (the "
                     "[onnx] or [openvino] extra: checkpoints are export folders of signver export, or names exported "
                     "once into the cache)")


def models(sub: argparse.ArgumentParser, detector: bool = False) -> None:
    """The pipeline's checkpoints, its backend and how it decides: ``--no-clean``, ``--combine``, ``--distance-only``."""
    checkpoints(sub, detector)
    backend_option(sub)
    sub.add_argument("--no-clean", action="store_true", help="embed crops as they are, without the cleaner")
    sub.add_argument("--combine", choices=("mean", "min"), default="mean",
                     help="how distances to several references combine (default mean)")
    sub.add_argument("--distance-only", action="store_true", help="decide on the combined distance and the pair "
                     "threshold, never the checkpoint's per-person rule (which applies from its min_references on)")


def engine_options(sub: argparse.ArgumentParser, description: str, local: str, ray: str) -> None:
    """``--engine local|ray`` and the Ray actor pool: ``--address``, ``--actors``, ``--gpus-per-actor``."""
    engine = sub.add_argument_group("engine", f"--engine ray: Ray Data actors (pip install 'signver-torch[ray]'), {description}")
    engine.add_argument("--engine", choices=("local", "ray"), default="local", help=f"local: {local} (default); ray: {ray}")
    engine.add_argument("--address", help="Ray cluster to join (auto, ray://HOST:10001); default: a local Ray here")
    engine.add_argument("--actors", type=int, default=1, help="Ray actors, each loading the models once")
    engine.add_argument("--gpus-per-actor", type=float, default=0, help="GPUs each actor holds (0: CPU actors)")


def document_limits(sub: argparse.ArgumentParser) -> None:
    """How documents are read (``io.load_pages``): PDF resolution and the page limit."""
    sub.add_argument("--dpi", type=int, default=PDF_DPI, help=f"PDF rasterisation resolution (default {PDF_DPI})")
    sub.add_argument("--max-pages", type=int, default=DEFAULT_MAX_PAGES,
                     help=f"refuse documents with more pages (default {DEFAULT_MAX_PAGES})")


def data_argument(folders: list[str], several: bool = True) -> str | list[str]:
    """``--data``: one folder as a path, several as a list (sources whose writers are named ``source:id``)."""
    if len(folders) > 1 and not several:
        raise SignVerError(f"this command reads one --data folder, not {len(folders)}")
    return folders[0] if len(folders) == 1 else folders
