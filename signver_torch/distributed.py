"""Archives on Ray Data: documents indexed into Parquet shards, and claims verified, by actors that load the models once.

``index(paths, library)`` reads the documents with Ray Data's ``read_binary_files`` and maps batches of them
through :class:`PageReader`, a callable class run by a pool of actors (CPU or GPU), each holding one
:class:`~signver_torch.pipeline.SignVer`. Every page becomes one Parquet row in the stored form of
:class:`~signver_torch.library.PageRecord` (the SQLite library's, through ``indexing.read_document``), with the
three models' sha256 and, for a page or a document that could not be read, its error. The same code runs on a
laptop (a local Ray started here) and on a cluster (``address``).

Exactly once, resumable: each batch of documents becomes one shard, written by the actor to a temporary file,
flushed and renamed (a shard is there whole or not at all), named by the documents it holds (a retried batch
rewrites the same name). The shards are the manifest of done documents: a rerun reads their ``source`` column
and reads only the documents not there yet. ``shard_library.ShardLibrary`` searches the shards.

``verify_pairs(claims)`` is ``SignVer.verify_many`` on the same actor pool: claims (a pairs file's) go out in
batches through :class:`ClaimChecker`, and their verdicts come back in claim order.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import uuid
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np

from signver_torch.checkpoints import verified_card
from signver_torch.claims import Claim, ClaimFailure, Verdict, one_line, outcome_from_dict, read_claims
from signver_torch.errors import CheckpointError, SignVerError
from signver_torch.indexing import Indexed, document_digest, read_document
from signver_torch.io import DEFAULT_MAX_PAGES, PDF_DPI
from signver_torch.library import LibraryError, PageRecord
from signver_torch.store import now

if TYPE_CHECKING:
    import pyarrow as pa
    import ray.data

    from signver_torch.pipeline import SignVer

#: A library folder: ``manifest.json`` and the shards ``shards/part-<digest>.parquet``.
MANIFEST = "manifest.json"
SHARDS = "shards"
SHARD_PATTERN = "part-*.parquet"
FORMAT = "signver-shards/1"


def schema() -> "pa.Schema":
    """One Parquet row per page (or per document that could not be opened: ``page`` 0 and ``error``)."""
    import pyarrow as pa

    box = pa.list_(pa.float64())
    return pa.schema([
        ("source", pa.string()), ("name", pa.string()), ("document_sha256", pa.string()), ("n_pages", pa.int32()),
        ("page", pa.int32()), ("width", pa.int32()), ("height", pa.int32()),
        ("signed", pa.bool_()), ("initialled", pa.bool_()), ("redacted", pa.bool_()), ("dated", pa.bool_()),
        ("mark_labels", pa.list_(pa.int8())), ("mark_scores", pa.list_(pa.float64())), ("mark_boxes", pa.list_(box)),
        ("signature_scores", pa.list_(pa.float64())), ("signature_boxes", pa.list_(box)),
        ("embeddings", pa.list_(pa.list_(pa.float32()))), ("crops", pa.list_(pa.binary())),
        ("cleaned", pa.list_(pa.binary())), ("thumbnail", pa.binary()),
        ("detector_sha256", pa.string()), ("cleaner_sha256", pa.string()), ("extractor_sha256", pa.string()),
        ("error", pa.string()), ("indexed_at", pa.string()),
    ])


def page_row(document: dict[str, Any], page: int, record: PageRecord | str) -> dict[str, Any]:
    """The Parquet row of one page: its :class:`PageRecord`, or the reason it could not be read."""
    if isinstance(record, str):
        return {**document, "page": page, "error": record}
    return {**document, "page": page, "width": record.size[0], "height": record.size[1], **record.tags,
            "mark_labels": [label for label, _, _ in record.marks], "mark_scores": [score for _, score, _ in record.marks],
            "mark_boxes": [box for _, _, box in record.marks], "signature_scores": record.scores,
            "signature_boxes": record.boxes, "embeddings": [row.tolist() for row in record.embeddings],
            "crops": record.crops, "cleaned": record.cleaned, "thumbnail": record.thumbnail}


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)`` then flush and rename onto ``path``: after a crash ``path`` is whole or absent."""
    temporary = path.with_name(f".tmp-{uuid.uuid4().hex}-{path.name}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def shard_files(library: str | os.PathLike) -> list[Path]:
    """The library's whole shards, by name (temporary files of an interrupted write are not shards)."""
    return sorted((Path(library) / SHARDS).glob(SHARD_PATTERN))


def done_sources(library: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``{source: (document sha256, first error or "")}`` of every document already in a shard."""
    import pyarrow.parquet as pq

    done: dict[str, tuple[str, str]] = {}
    for shard in shard_files(library):
        table = pq.read_table(shard, columns=["source", "document_sha256", "error"])
        for source, digest, error in zip(*(table.column(name).to_pylist() for name in ("source", "document_sha256", "error"))):
            if source not in done or (error and not done[source][1]):
                done[source] = (digest, error or "")
    return done


def document_number(digest: str) -> int:
    """A document's id in a sharded library: the first 52 bits of its sha256 (stable across shards and reruns)."""
    return int(digest[:13], 16)


def actor_signver(threads: int | None, **options: Any) -> "SignVer":
    """An actor's pipeline held to the actor's ``threads`` (its CPUs, not the node's): torch's, and the exported graphs'
    and host steps' (``OMP_NUM_THREADS``, which :func:`~signver_torch.runtime.default_threads` reads). torch is not
    imported for it: under an exported backend the actor may run without torch."""
    from signver_torch.pipeline import SignVer

    if threads:
        os.environ["OMP_NUM_THREADS"] = str(threads)  # read by torch when it starts, and by every exported graph
        torch = sys.modules.get("torch")
        if torch is not None:
            torch.set_num_threads(threads)
    return SignVer(**options)


class PageReader:
    """Ray Data's callable class: loads the models once per actor, then reads batches of documents
    (``bytes`` and ``path`` columns) and writes each batch as one shard. Returns one summary row per document."""

    def __init__(self, library: str, models: dict[str, str], clean: bool, device: str | None, dpi: int,
                 max_pages: int, threads: int | None = None, backend: str = "torch") -> None:
        self.folder = Path(library) / SHARDS
        self.signver = actor_signver(threads, **models, clean=clean, device=device, backend=backend)
        loaded = self.signver.load_all()
        self.shas = {f"{kind}_sha256": loaded[kind].sha256 if kind != "cleaner" or clean else ""
                     for kind in ("detector", "cleaner", "extractor")}
        self.dpi, self.max_pages = dpi, max_pages

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows: list[dict[str, Any]] = []
        summary: dict[str, list[Any]] = {"source": [], "document_sha256": [], "n_pages": [], "n_signatures": [], "error": []}
        for data, source in zip(batch["bytes"], batch["path"]):
            data, source = bytes(data), str(source)
            digest = document_digest(data)
            document = {"source": source, "name": Path(source).name, "document_sha256": digest, **self.shas,
                        "indexed_at": now()}
            try:
                numbered: list[tuple[int, PageRecord | str]] = list(enumerate(
                    read_document(self.signver, source, data, dpi=self.dpi, max_pages=self.max_pages), start=1))
            except SignVerError as error:  # the document cannot be opened: one row (page 0) says why
                numbered = [(0, " ".join(str(error).split()))]
            except Exception as error:  # noqa: BLE001 (a bug on one document of millions: reported, the job goes on)
                numbered = [(0, f"{source}: {type(error).__name__}: {' '.join(str(error).split())}")]
            document["n_pages"] = sum(1 for number, _ in numbered if number)
            rows.extend(page_row(document, number, record) for number, record in numbered)
            records = [record for _, record in numbered]
            errors = [record for record in records if isinstance(record, str)]
            summary["source"].append(source)
            summary["document_sha256"].append(digest)
            summary["n_pages"].append(document["n_pages"])
            summary["n_signatures"].append(sum(len(record.boxes) for record in records if isinstance(record, PageRecord)))
            summary["error"].append(errors[0] if errors else "")
        name = hashlib.sha256("\n".join(sorted(summary["source"])).encode()).hexdigest()[:32]
        table = pa.Table.from_pylist(rows, schema=schema())
        write_atomically(self.folder / f"part-{name}.parquet", lambda path: pq.write_table(table, path))
        return summary


def open_manifest(library: str | os.PathLike, extractor_sha256: str) -> dict[str, Any]:
    """The library folder's manifest, created when missing; a library holding embeddings of another extractor is
    refused (one holding none yet, as a first job that failed leaves it, takes the extractor given now)."""
    folder = Path(library)
    if folder.is_file():
        raise LibraryError(f"{folder}: is a file (an SQLite library?); the ray engine writes a folder of Parquet shards")
    path = folder / MANIFEST
    if path.is_file():
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise LibraryError(f"{path}: not a readable library manifest ({error})") from error
        if manifest.get("format") != FORMAT:
            raise LibraryError(f"{path}: not a sharded signver library (format {manifest.get('format')!r})")
        if manifest.get("extractor_sha256") != extractor_sha256 and not shard_files(folder):
            # nothing embedded yet (a first job that failed before its first shard): the library is free to change
            manifest = {**manifest, "extractor_sha256": extractor_sha256}
            write_manifest(folder, manifest)
        if manifest.get("extractor_sha256") != extractor_sha256:
            raise CheckpointError(
                f"{folder}: library was built with extractor sha256 {str(manifest.get('extractor_sha256'))[:12]}…, but the "
                f"extractor loaded now is {extractor_sha256[:12]}… (embeddings of different models cannot be compared)")
        return manifest
    (folder / SHARDS).mkdir(parents=True, exist_ok=True)
    manifest = {"format": FORMAT, "extractor_sha256": extractor_sha256, "created_at": now()}
    write_manifest(folder, manifest)
    return manifest


def write_manifest(library: str | os.PathLike, manifest: dict[str, Any]) -> None:
    write_atomically(Path(library) / MANIFEST, lambda path: path.write_text(json.dumps(manifest, indent=1)))


def check_engine(actors: int, batch_size: int) -> None:
    """Before any work: Ray installed, and a pool of at least one actor taking batches of at least one."""
    try:
        import ray  # noqa: F401
    except ImportError as error:
        raise SignVerError("the ray engine needs Ray Data (pip install 'signver-torch[ray]')") from error
    if actors < 1 or batch_size < 1:
        raise SignVerError(f"actors and batch size must be at least 1, not {actors} and {batch_size}")


@contextlib.contextmanager
def ray_session(address: str | None, cpus: float) -> Iterator[ModuleType]:
    """Ray joined at ``address`` (``"auto"``, ``ray://host:10001``), else a local Ray of ``cpus`` CPUs started here and
    shut down at the end; a Ray this process already runs is used as it is (and left running)."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address=address, num_cpus=None if address else max(1, int(np.ceil(cpus))),
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield ray
    finally:
        if started:
            ray.shutdown()


def on_actors(dataset: "ray.data.Dataset", reader: type, options: dict[str, Any], actors: int, cpus_per_actor: float,
              gpus_per_actor: float, batch_size: int) -> "ray.data.Dataset":
    """``dataset`` mapped through ``reader`` (a callable class taking ``options``, its ``device`` and its ``threads``)
    by a pool of ``actors``, each holding ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs (then on CUDA)."""
    import ray

    return dataset.map_batches(
        reader, batch_size=batch_size, batch_format="numpy",
        fn_constructor_kwargs={**options, "device": "cuda" if gpus_per_actor else "cpu", "threads": max(1, int(cpus_per_actor))},
        compute=ray.data.ActorPoolStrategy(size=actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor)


def index(paths: Sequence[str | os.PathLike], library: str | os.PathLike, *, detector: str = "default",
          cleaner: str = "default", extractor: str = "default", clean: bool = True, backend: str = "torch",
          address: str | None = None,
          actors: int = 1, cpus_per_actor: float = 1, gpus_per_actor: float = 0, batch_size: int = 4,
          dpi: int = PDF_DPI, max_pages: int = DEFAULT_MAX_PAGES,
          progress: Callable[[Indexed], None] | None = None) -> list[Indexed]:
    """Index document files into the sharded ``library`` folder on Ray; returns what happened to each.

    Documents already in a shard are reported ``skipped`` and not read again. ``address`` joins a running
    cluster (``"auto"``, ``ray://host:10001``); without it a local Ray with ``actors * cpus_per_actor`` CPUs runs
    here and is shut down at the end. Each actor holds ``cpus_per_actor`` CPUs and ``gpus_per_actor`` GPUs.
    """
    check_engine(actors, batch_size)
    folder = Path(library)
    # the card's sha256, checked against the weights: no network is built here before Ray starts (docs/scale.md)
    open_manifest(folder, verified_card("extractor", extractor)[1]["sha256"])
    for stale in (folder / SHARDS).glob(".tmp-*"):  # a write killed half-way: never renamed, never a shard
        stale.unlink(missing_ok=True)
    done = done_sources(folder)
    sources = [str(Path(path).resolve()) for path in paths]
    results: list[Indexed] = []
    for source in sources:
        if source in done:
            digest, error = done[source]
            results.append(Indexed(source, document_number(digest), skipped=True, error=error or None))
            if progress is not None:
                progress(results[-1])
    todo = [source for source in sources if source not in done]
    if not todo:
        return results
    with ray_session(address, actors * cpus_per_actor) as ray:
        # as many reading tasks at once as there are actors: reading tasks of no CPU left unbounded make Ray start a
        # worker process for each, which on a small machine delays the actors' first pages (measured in docs/scale.md)
        documents = ray.data.read_binary_files(todo, include_paths=True, num_cpus=0, concurrency=actors,
                                               override_num_blocks=max(1, len(todo) // batch_size))
        summaries = on_actors(documents, PageReader, {
            "library": str(folder.resolve()), "clean": clean, "models": {"detector": detector, "cleaner": cleaner, "extractor": extractor},
            "dpi": dpi, "max_pages": max_pages, "backend": backend}, actors, cpus_per_actor, gpus_per_actor, batch_size)
        for row in summaries.iter_rows():
            results.append(Indexed(row["source"], document_number(row["document_sha256"]), int(row["n_pages"]),
                                   int(row["n_signatures"]), error=row["error"] or None))
            if progress is not None:
                progress(results[-1])
    return results


class ClaimChecker:
    """Ray Data's callable class for claims: each actor holds one :class:`~signver_torch.pipeline.SignVer` (its
    models loaded once), decides batches of claims (``row`` and ``claim`` JSON columns) with ``SignVer.verify_many``
    and returns each claim's row and its outcome as ``as_dict`` JSON."""

    def __init__(self, models: dict[str, str], options: dict[str, Any], gallery: str | None, device: str | None,
                 threads: int | None = None) -> None:
        self.signver = actor_signver(threads, **models, **options, device=device)
        self.signver.extractor  # noqa: B018 (loaded now: a broken checkpoint fails the actor, not a batch)
        self.gallery = gallery

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        claims = [Claim(item["query"], tuple(item["references"]), item["person"])
                  for item in map(json.loads, batch["claim"])]
        try:
            outcomes: list[Verdict | ClaimFailure] = list(self.signver.verify_many(claims, self.gallery))
        except Exception as error:  # noqa: BLE001 (a bug on one batch of millions: its claims say so, the job goes on)
            message = one_line(error) if isinstance(error, SignVerError) else f"{type(error).__name__}: {one_line(error)}"
            outcomes = [ClaimFailure(claim.query, message, claim.person, claim.references) for claim in claims]
        return {"row": [int(row) for row in batch["row"]], "outcome": [json.dumps(o.as_dict()) for o in outcomes]}


def verify_pairs(claims: Sequence[Claim] | str | os.PathLike, gallery: str | os.PathLike | None = None, *,
                 extractor: str = "default", cleaner: str = "default", clean: bool = True, combine: str = "mean",
                 per_person: bool = True, backend: str = "torch", address: str | None = None, actors: int = 1,
                 cpus_per_actor: float = 1, gpus_per_actor: float = 0,
                 batch_size: int = 32) -> Iterator[Verdict | ClaimFailure]:
    """Verify claims (or a pairs file's: ``claims.read_claims``) on Ray: what ``SignVer.verify_many`` yields, in claim
    order, each claim decided by a pool of actors that load the models once (``index``'s ``address`` and pool).

    A claim that cannot be decided (an image missing or unreadable, a person not enrolled) is a
    :class:`~signver_torch.claims.ClaimFailure` and the others go on. Images are read by the actors, so on a cluster
    they and ``gallery`` must be on a filesystem every node sees; relative paths are taken from here. The Ray session
    lasts while the iterator runs (close it to stop early). ``claims.labelled_summaries`` sums labelled outcomes up.
    """
    check_engine(actors, batch_size)
    claims = read_claims(claims) if isinstance(claims, (str, os.PathLike)) else list(claims)
    batch_size = max(1, min(batch_size, -(-len(claims) // actors)))  # a short file still keeps every actor busy
    gallery = os.path.abspath(gallery) if gallery is not None else None
    if claims:  # the models, their backend and the gallery checked here, in one line, before any actor starts
        from signver_torch.pipeline import SignVer

        checked = SignVer(extractor=extractor, cleaner=cleaner, clean=clean, per_person=per_person, backend=backend)
        store = checked.claims_gallery(claims, gallery)  # none needed, missing, of another model: now
        if store is not None:
            store.close()
        checked.extractor  # noqa: B018 (an exported backend is also exported into the cache once, here)
        if clean:
            checked.cleaner  # noqa: B018
    items = [{"row": row, "claim": json.dumps({"query": os.path.abspath(claim.query), "person": claim.person,
                                              "references": [os.path.abspath(path) for path in claim.references]})}
             for row, claim in enumerate(claims)]
    options = {"models": {"extractor": extractor, "cleaner": cleaner}, "gallery": gallery,
               "options": {"clean": clean, "combine": combine, "per_person": per_person, "backend": backend}}

    def in_claim_order() -> Iterator[Verdict | ClaimFailure]:
        if not claims:
            return
        with ray_session(address, actors * cpus_per_actor) as ray:
            dataset = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // batch_size)))
            waiting: dict[int, Verdict | ClaimFailure] = {}  # outcomes that came before an earlier claim's
            done = 0
            for row in on_actors(dataset, ClaimChecker, options, actors, cpus_per_actor, gpus_per_actor, batch_size).iter_rows():
                waiting[int(row["row"])] = outcome_from_dict(json.loads(row["outcome"]))
                while done in waiting:
                    yield as_claimed(claims[done], waiting.pop(done))
                    done += 1
        if done != len(claims):  # never a short answer that looks whole
            raise SignVerError(f"Ray returned the outcomes of {done} claims in order, of {len(claims)}")

    return in_claim_order()


def as_claimed(claim: Claim, outcome: Verdict | ClaimFailure) -> Verdict | ClaimFailure:
    """``outcome`` naming the claim's images as the claim did, in its error too (its actor read them by absolute path)."""
    named = {"references": claim.references} if outcome.references else {}
    if isinstance(outcome, ClaimFailure):
        error = outcome.error
        for path in (claim.query, *claim.references):
            error = error.replace(os.path.abspath(path), path)
        named["error"] = error
    return replace(outcome, query=claim.query, **named)


__all__ = ["FORMAT", "MANIFEST", "ClaimChecker", "PageReader", "actor_signver", "as_claimed", "check_engine",
           "done_sources", "document_number", "index", "on_actors", "open_manifest", "ray_session", "schema",
           "shard_files", "verify_pairs", "write_atomically", "write_manifest"]
