"""The end-to-end job: page → detected signatures → crops → cleaned → embeddings → verdicts.

``SignVer`` loads the three models lazily (a gallery command never loads the detector) and keeps
queries and references on the same path: both are cleaned (unless ``clean=False``) and embedded by
the same extractor, whose calibrated threshold decides.

Claims and their verdicts live in ``claims.py``, a document's report and its picture in ``report.py``;
their names are importable from here too.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from signver_torch.cards import FACADES, TORCH_FREE_FACADES
from signver_torch.claims import Claim, ClaimFailure, ClaimVerdicts, Verdict, read_claims
from signver_torch.detector.marks import Mark, summarize
from signver_torch.detector.selection import box_iou, nms
from signver_torch.errors import BlankSignatureError, ExportError, SignVerError
from signver_torch.io import ImageSource, load_image, load_image_array
from signver_torch.matcher.api import Combine, Matcher
from signver_torch.matcher.decisions import DecisionPolicy, WriterModel
from signver_torch.matcher.gallery import Gallery, Match, source_digest
from signver_torch.report import DocumentReport, SignatureVerdict, report_picture
from signver_torch.runtime import check_backend

#: How many recently embedded crops ``SignVer`` keeps (their embedding and cleaned version, ~0.3 MB each at most).
EMBEDDING_CACHE_SIZE = 256
#: Signature boxes overlapping more than this (IoU) are one signature.
SIGNATURE_OVERLAP = 0.3
#: Margin added around a detected signature box before cropping (fraction of its size).
CROP_MARGIN = 0.08


@dataclass
class PageReading:
    """What the models see on one page: every detection, the page's tags and its signatures."""

    image: Image.Image
    detections: dict[str, Any]  # the detector's boxes, scores and labels (torch's tensors, or arrays without torch)
    tags: dict[str, bool | int]  # signed, initialled, redacted, dated (and counts)
    boxes: list[list[float]]  # the signatures to verify, xyxy pixels
    scores: list[float]
    crops: list[np.ndarray] = field(repr=False)  # (H, W) grayscale in [0, 1]
    cleaned: list[np.ndarray] = field(repr=False)
    embeddings: np.ndarray = field(repr=False)  # (len(boxes), D)


class SignVer:
    """Detector, cleaner, extractor and matcher behind one object.

    Example::

        signver = SignVer()
        report = signver.verify_document("contract.png", references=["ref1.png", "ref2.png"])
        print(report.verdict)
        signver.report_picture(report).save("report.png")
    """

    def __init__(
        self,
        detector: str | os.PathLike = "default",
        cleaner: str | os.PathLike = "default",
        extractor: str | os.PathLike = "default",
        *,
        clean: bool = True,
        combine: Combine = "mean",
        per_person: bool = True,
        device: str | None = None,
        backend: str = "torch",
    ) -> None:
        self._names = {"detector": detector, "cleaner": cleaner, "extractor": extractor}
        self._models: dict[str, Any] = {}
        self._embedded: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()  # pixel sha256 -> (embedding, cleaned)
        self.clean, self.combine, self.per_person, self.device = clean, combine, per_person, device
        self.backend = check_backend(backend)  # each facade's: exported backends load exports (or export checkpoints once), "auto" chooses per module

    def _model(self, kind: str) -> Any:
        if kind not in self._models:  # import only the facade needed: a gallery command never pays for the detector
            self._models[kind] = self._torch_free(kind) or _facade(FACADES[kind])(device=self.device, backend=self.backend).load(self._names[kind])
        return self._models[kind]

    def _torch_free(self, kind: str) -> Any:
        """Under an exported backend on the CPU, the module's export run without torch (``TORCH_FREE_FACADES``), where
        there is one to run; else ``None``: the torch facade loads it (exporting a checkpoint into the cache first)."""
        on_cpu = None if self.device is None else str(self.device).split(":")[0] == "cpu"
        if self.backend == "torch" or kind not in TORCH_FREE_FACADES or on_cpu is False:
            return None
        try:
            return _facade(TORCH_FREE_FACADES[kind])(backend=self.backend, on_cpu=on_cpu).load(self._names[kind])
        except ExportError:  # no export yet, an older or a broken one: the torch facade exports it again
            return None

    @property
    def extractor(self) -> Any:
        return self._model("extractor")

    @property
    def cleaner(self) -> Any:
        return self._model("cleaner")

    def load_all(self) -> dict[str, Any]:
        """Load every model now (a service does this once at start) and return them by kind."""
        return {kind: self._model(kind) for kind in FACADES}

    @property
    def matcher(self) -> Matcher:
        return Matcher(threshold=self.extractor.threshold)

    @property
    def decision(self) -> DecisionPolicy | None:
        """The extractor card's per-person rule, unless ``per_person`` is off."""
        return self.extractor.decision if self.per_person else None

    def decide(
        self, query: np.ndarray, references: np.ndarray, writer_model: Callable[[], WriterModel | None] | None = None
    ) -> Verdict:
        """A claim's verdict: the per-person rule where it applies (enough references), else the
        combined distance against the pair threshold. ``writer_model`` gives a stored svm model (a
        gallery's); without it the model is fitted on the spot."""
        match, distance = self.matcher.verify_references(query, references, combine=self.combine)
        policy = self.decision
        if policy is None or not policy.applies(len(references)):
            return Verdict(match, distance, "distance", distance, self.extractor.threshold, combine=self.combine)
        model = writer_model() if writer_model is not None and policy.needs_model else None
        score = policy.score(query, references, model)
        return Verdict(score <= policy.threshold, distance, policy.rule, score, policy.threshold)

    def embed(self, signatures: Sequence[ImageSource]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Clean (unless disabled) and embed signature crops; returns embeddings and the cleaned crops."""
        crops = [_load_signature(item, i) for i, item in enumerate(signatures)]
        if not crops:
            raise SignVerError("no signatures given")
        return self._embed_loaded(crops)

    def _embed_loaded(self, crops: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Clean and embed loaded crops; crops seen lately (the same references sent again and again to a
        service) come from a small cache keyed by their pixels, the rest are computed in one batch."""
        # cleaned or not, and at which bound: different embeddings
        setting = (f"clean=True,max_side={self.cleaner.max_side}" if self.clean else "clean=False").encode()
        keys = [hashlib.sha256(crop.tobytes() + str(crop.shape).encode() + setting).hexdigest() for crop in crops]
        first: dict[str, np.ndarray] = {}  # each crop not cached yet, once
        for key, crop in zip(keys, crops):
            if key not in self._embedded:
                first.setdefault(key, crop)
        if first:
            missing, batch = list(first), list(first.values())
            cleaned = self._model("cleaner").clean_pages(batch) if self.clean else batch
            try:
                embeddings = np.asarray(self.extractor.embed(cleaned))
            except BlankSignatureError as error:  # its indices, which were into the batch, now into ``crops``
                blank = {missing[index] for index in error.indices}
                indices = [i for i, key in enumerate(keys) if key in blank]
                raise BlankSignatureError(f"no signature ink found in input item(s) {indices} (blank or uniform crop)",
                                          indices) from error
            for key, embedding, clean in zip(missing, embeddings, cleaned):
                self._embedded[key] = (embedding, np.asarray(clean[0]))
        results = [self._embedded[key] for key in keys]  # before trimming: a batch may be larger than the cache
        for key in keys:
            self._embedded.move_to_end(key)
        while len(self._embedded) > EMBEDDING_CACHE_SIZE:
            self._embedded.popitem(last=False)
        return np.stack([embedding for embedding, _ in results]), [clean.copy() for _, clean in results]  # callers own them

    def embed_each(self, signatures: Sequence[ImageSource]) -> list[np.ndarray | SignVerError]:
        """Embed many signatures in batches, one result per input: its embedding, or the
        :class:`SignVerError` it raised (a missing, broken or blank file does not stop the others)."""
        results: list[np.ndarray | SignVerError | None] = [None] * len(signatures)
        pending: list[tuple[int, np.ndarray]] = []
        for index, item in enumerate(signatures):
            try:
                pending.append((index, _load_signature(item, index)))
            except SignVerError as error:
                results[index] = error
        while pending:
            try:
                embeddings, _ = self._embed_loaded([crop for _, crop in pending])
            except BlankSignatureError as error:  # drop the blank items, embed the rest together again
                blank = set(error.indices) or set(range(len(pending)))
                for position in blank:
                    index = pending[position][0]
                    results[index] = BlankSignatureError(f"{_name(signatures[index], index)}: no signature ink found (blank or uniform image)")
                pending = [item for position, item in enumerate(pending) if position not in blank]
                continue
            except SignVerError:  # another refusal of the batch (a crop too small, ...): each item alone says which
                for index, crop in pending:
                    results[index] = self._embed_one(signatures[index], index, crop)
                break
            for (index, _), embedding in zip(pending, embeddings):
                results[index] = embedding
            break
        return results  # type: ignore[return-value]

    def _embed_one(self, item: ImageSource, index: int, crop: np.ndarray) -> np.ndarray | SignVerError:
        try:
            return self._embed_loaded([crop])[0][0]
        except SignVerError as error:
            return SignVerError(f"{_name(item, index)}: {error}")

    def verify_many(
        self, claims: Sequence[Claim], gallery: str | os.PathLike | None = None, batch_size: int = 32
    ) -> Iterator[Verdict | ClaimFailure]:
        """Verify each claim with one model load, yielding its verdict in order (with ``query``, and
        ``person`` and ``n_references`` or ``references``) or the :class:`ClaimFailure` it came to.

        Claims are embedded ``batch_size`` at a time and every image is embedded once, however many
        claims name it; a person's references are read from ``gallery`` once.
        """
        embedded: dict[str, np.ndarray | SignVerError] = {}
        store = self.claims_gallery(claims, gallery)
        verdict = ClaimVerdicts(self.decide, store)
        try:
            for start in range(0, len(claims), batch_size):
                chunk = claims[start : start + batch_size]
                new = list(dict.fromkeys(source for claim in chunk for source in (claim.query, *claim.references)
                                         if source not in embedded))
                if new:
                    embedded.update(zip(new, self.embed_each(new)))
                for claim in chunk:
                    yield verdict(claim, embedded)
        finally:
            if store is not None:
                store.close()

    def claims_gallery(self, claims: Sequence[Claim], gallery: str | os.PathLike | None) -> Gallery | None:
        """The gallery ``claims`` read their people from, opened (checked against the extractor), or ``None``
        when no claim names a person; claims naming people without a gallery are refused."""
        if not any(claim.person is not None for claim in claims):
            return None
        if gallery is None:
            raise SignVerError("claims against enrolled people need a gallery")
        return self.gallery(gallery)

    def gallery(self, path: str | os.PathLike, create: bool = False) -> Gallery:
        """The gallery at ``path``, keeping writer models when the extractor's rule needs them."""
        policy = self.decision
        return Gallery(path, self.extractor.sha256, create=create,
                       background=policy.background if policy is not None and policy.needs_model else None)

    def enroll(self, gallery: str | os.PathLike, person: str, signatures: Sequence[ImageSource],
               sources: Sequence[tuple[str, str]] | None = None) -> int:
        """Add ``person``'s reference signatures to the gallery file (created if missing), all or nothing.
        ``sources`` are their ``(sha256, name)``; by default the files' (or the pixels') digests."""
        sources = list(sources) if sources is not None else [source_digest(item) for item in signatures]
        embeddings, _ = self.embed(signatures)  # every image must embed before anything is written
        with self.gallery(gallery, create=True) as store:
            return store.add(person, embeddings, sources)

    def identify(self, gallery: str | os.PathLike, signature: ImageSource, k: int = 5) -> list[Match]:
        with self.gallery(gallery) as store:  # a missing or foreign gallery fails before any embedding
            embeddings, _ = self.embed([signature])
            return store.search(embeddings[0], k)

    def verify_claim(self, gallery: str | os.PathLike, person: str, signature: ImageSource) -> Verdict:
        embeddings, _ = self.embed([signature])
        with self.gallery(gallery) as store:
            references = store.references(person)
            verdict = self.decide(embeddings[0], references, lambda: store.writer_model(person))
        return replace(verdict, person=person, n_references=len(references))

    def verify_references(self, references: Sequence[ImageSource], signature: ImageSource) -> Verdict:
        embeddings, _ = self.embed([signature, *references])
        return replace(self.decide(embeddings[0], embeddings[1:]), references=tuple(
            str(r) if isinstance(r, (str, os.PathLike)) else f"reference {i}" for i, r in enumerate(references)))

    def read_page(self, page: ImageSource, score_threshold: float | None = None) -> PageReading:
        """Detect every mark on ``page`` scoring at least ``score_threshold`` (default: the detector card's,
        chosen on validation pages), tag it, and crop, clean and embed each signature found.

        The one reading that :meth:`verify_document` and the document library share."""
        return self._embed_found(*self._detect(page, score_threshold))

    def _detect(self, page: ImageSource, score_threshold: float | None) -> tuple[Image.Image, dict[str, Any]]:
        image = load_image(page)
        [found] = self._model("detector").predict([image], score_threshold=score_threshold)  # tensors or arrays
        return image, found

    def _embed_found(self, image: Image.Image, found: dict[str, Any]) -> PageReading:
        boxes, scores, labels = (np.asarray(found[key]) for key in ("boxes", "scores", "labels"))
        keep = np.flatnonzero(_signatures_not_outscored(boxes, scores, labels))
        # one signature, one verdict: overlapping signature boxes are merged
        keep = keep[nms(boxes[keep], scores[keep], SIGNATURE_OVERLAP)]
        boxes, scores = boxes[keep].tolist(), scores[keep].tolist()
        gray = np.asarray(image.convert("L"), np.float32) / 255
        crops = [_crop(gray, box) for box in boxes]
        embeddings, cleaned = self.embed(crops) if crops else (np.zeros((0, 0), np.float32), [])
        return PageReading(image, found, summarize(found), boxes, scores, crops, cleaned, embeddings)

    def _references_beside_detector(self) -> bool:
        """Whether :meth:`verify_document` cleans and embeds the references in a thread while the page is detected:
        only where OpenVINO runs the cleaner, the one case measured faster on 2 cores (README, "Exported backends");
        beside an onnxruntime or torch cleaner the two contend for the cores. The models are loaded here first, one at
        a time; the page's crops wait for the references, so each network runs one call at a time."""
        if not self.clean or self.cleaner.backend != "openvino":
            return False
        for kind in ("detector", "extractor"):  # loaded before the two threads use them
            self._model(kind)
        return True

    def verify_document(
        self,
        page: ImageSource,
        *,
        person: str | None = None,
        gallery: str | os.PathLike | None = None,
        references: Sequence[ImageSource] | None = None,
        score_threshold: float | None = None,
    ) -> DocumentReport:
        """Every signature the detector finds on ``page`` (at ``score_threshold``, default the detector
        card's), checked against the claimed person (from a gallery) or against reference images."""
        if (person is None or gallery is None) == (references is None):
            raise SignVerError("verify_document needs either person and gallery, or references")
        writer_model = None
        if references is not None:
            claimed = ", ".join(str(r) for r in references)
            if self._references_beside_detector():
                with ThreadPoolExecutor(1, thread_name_prefix="signver-references") as pool:
                    pending = pool.submit(self.embed, references)
                    try:
                        detected = self._detect(page, score_threshold)
                    except BaseException:
                        pending.result()  # a bad reference is reported before a bad page, as without the overlap
                        raise
                    reference_embeddings, _ = pending.result()
            else:
                reference_embeddings, _ = self.embed(references)
                detected = self._detect(page, score_threshold)
        else:
            claimed = str(person)
            with self.gallery(gallery) as store:  # type: ignore[arg-type]
                reference_embeddings = store.references(str(person))
                model = store.writer_model(str(person))
            writer_model = lambda: model  # noqa: E731  (the stored model, read while the gallery was open)
            detected = self._detect(page, score_threshold)
        reading = self._embed_found(*detected)
        verdicts = [SignatureVerdict(box, score, self.decide(embedding, reference_embeddings, writer_model), crop, clean)
                    for box, score, crop, clean, embedding in zip(reading.boxes, reading.scores, reading.crops,
                                                                  reading.cleaned, reading.embeddings)]
        name = str(page) if isinstance(page, (str, os.PathLike)) else "page"
        return DocumentReport(name, claimed, verdicts)

    def report_picture(self, report: DocumentReport, page: ImageSource) -> Image.Image:
        """The page with each signature's box and verdict, and each crop beside its cleaned version."""
        return report_picture(report, page)


def _signatures_not_outscored(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Which detections are signatures to verify: the detector's NMS works per class, so a handwritten
    date can also come out as a weaker signature box; a signature box that a more confident box of
    another class covers (IoU >= 0.5) is that other mark and is not verified."""
    signature = labels == Mark.SIGNATURE
    other = ~signature
    if other.any():
        covered = box_iou(boxes, boxes[other]) >= 0.5
        outscored = scores[other][None, :] > scores[:, None]
        signature &= ~(covered & outscored).any(1)
    return signature


def _name(item: ImageSource, index: int) -> str:
    return str(item) if isinstance(item, (str, os.PathLike)) else f"signature {index}"


def _facade(where: tuple[str, str]) -> Any:
    """The facade class named by a ``(module, class)`` entry of ``cards.FACADES`` or ``cards.TORCH_FREE_FACADES``."""
    return getattr(importlib.import_module(where[0]), where[1])


def _load_signature(item: ImageSource, index: int) -> np.ndarray:
    """A signature as the ``(1, H, W)`` float32 array in ``[0, 1]`` every path embeds (torch's or not)."""
    return load_image_array(item, "L", name=None if isinstance(item, (str, os.PathLike)) else _name(item, index))


def _crop(gray: np.ndarray, box: Sequence[float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    dx, dy = (x1 - x0) * CROP_MARGIN, (y1 - y0) * CROP_MARGIN
    height, width = gray.shape
    left, top = max(int(x0 - dx), 0), max(int(y0 - dy), 0)
    right, bottom = min(int(np.ceil(x1 + dx)), width), min(int(np.ceil(y1 + dy)), height)
    crop = gray[top:bottom, left:right]
    if min(crop.shape) < 8:  # the cleaner's minimum: pad tiny boxes with paper
        crop = np.pad(crop, [(0, max(0, 8 - crop.shape[0])), (0, max(0, 8 - crop.shape[1]))], constant_values=1.0)
    return crop


__all__ = ["Claim", "ClaimFailure", "DocumentReport", "PageReading", "SignVer", "SignatureVerdict", "Verdict", "read_claims"]
