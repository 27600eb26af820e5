"""The page synthesizer (``detector/pages.py``): boxes hold exactly the pasted handwriting, signature blocks,
unlabelled notes, stacked signatures."""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from signver_torch.detector.pages import INK_LEVEL, PageConfig, PageSynthesizer


def test_synthetic_boxes_cover_exactly_the_pasted_handwriting(ink_maps: list[np.ndarray]) -> None:
    synthesizer = PageSynthesizer(PageConfig(size=512))
    seen: set[int] = set()
    for index in range(12):
        layers = synthesizer.layers(ink_maps, np.random.default_rng((0, index)))
        ink = layers.handwriting > INK_LEVEL
        covered = np.zeros_like(ink)
        for (x0, y0, x1, y1), label in zip(layers.boxes.astype(int), layers.labels):
            seen.add(int(label))
            if label == 3:  # a redaction: the printed layer is filled inside its box
                assert layers.printed[y0:y1, x0:x1].mean() > 0.6
                continue
            inside = ink[y0:y1, x0:x1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()  # tight
            covered[y0:y1, x0:x1] = True
        assert not (ink & ~covered).any()  # no handwriting outside a box
    assert seen == {1, 2, 3, 4}


def test_signature_blocks_sign_over_a_typed_name_boxed_apart_from_it(ink_maps: list[np.ndarray]) -> None:
    """The real letters' convention: the signature's box holds its ink only; the typed name under it
    (printed, often touching the ink) is not part of it."""
    synthesizer = PageSynthesizer(PageConfig(size=512, signature_block_rate=1.0, max_signatures=0))
    signed_blocks = 0
    for index in range(6):
        layers = synthesizer.layers(ink_maps, np.random.default_rng((3, index)))
        signatures = layers.boxes[layers.labels == 1].astype(int)
        for x0, y0, x1, y1 in signatures:
            below = layers.printed[y1 : y1 + 40, x0:x1]  # the typed name, within a few lines under the ink
            signed_blocks += int((below > 0.5).any())
            assert (layers.handwriting[y0:y1, x0:x1] > INK_LEVEL).any()
        assert len(signatures) > 0
    assert signed_blocks >= 6


def test_handwritten_notes_stay_unlabelled_and_are_signed_underneath(ink_maps: list[np.ndarray]) -> None:
    """Cursive lines that are not signatures (the real pages' handwritten letters) carry no box; the
    signature under a signed note is boxed, and only it."""
    config = PageConfig(size=512, handwritten_note_rate=1.0, signature_block_rate=0.0, max_signatures=0,
                        max_initials=0, max_dates=0, max_redactions=0)
    synthesizer = PageSynthesizer(config)
    signed_under_a_note = 0
    for index in range(8):
        layers = synthesizer.layers(ink_maps, np.random.default_rng((4, index)))
        note = layers.notes > INK_LEVEL
        assert note.sum() > 200  # several lines of words
        assert (layers.labels == 1).all()  # signatures only (under notes or on form rules)
        for x0, y0, x1, y1 in layers.boxes.astype(int):
            assert not note[y0:y1, x0:x1].any()  # a box holds its signature, none of the note
            signed_under_a_note += int(note[max(0, y0 - 80) : y0, x0:x1].any())
    assert 0 < signed_under_a_note < 8


def test_stacked_signatures_are_boxed_one_per_signer(ink_maps: list[np.ndarray]) -> None:
    """Cheques and approval columns sign one under another, the ink nearly touching: each signature
    gets its own box, which reaches at most a quarter of its height into the one above."""
    config = PageConfig(size=640, stacked_signature_rate=1.0, signature_block_rate=0.0, handwritten_note_rate=0.0,
                        max_signatures=1, max_initials=0, max_dates=0, max_redactions=0)
    synthesizer = PageSynthesizer(config)
    stacks = 0
    for index in range(24):
        layers = synthesizer.layers(ink_maps, np.random.default_rng((5, index)))
        boxes = layers.boxes[layers.labels == 1]
        for below in boxes:
            height = below[3] - below[1]
            stacks += any(  # just under another one, close, left edges roughly aligned
                above[3] - 0.3 * height <= below[1] <= above[3] + 0.1 * height and abs(below[0] - above[0]) <= 0.5 * (above[2] - above[0])
                for above in boxes if above is not below
            )
        overlaps = box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).fill_diagonal_(0)
        assert len(boxes) < 2 or overlaps.max() < 0.3  # one box a signer, not one around the stack
        for x0, y0, x1, y1 in boxes.astype(int):
            assert (layers.handwriting[y0:y1, x0:x1] > INK_LEVEL).any()
    assert stacks >= 6
