"""A third source whose files declare their text: (writer, text) classes, same-text batches, the
same-text impostor protocol, and augmentation against ink darkness and stroke width."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch

from signver_torch.data.signatures import class_key, class_labels, discover_signatures
from signver_torch.errors import DataError, SignVerError
from signver_torch.extractor.data import InkGamma, StrokeWidthJitter, WriterBatchSampler
from signver_torch.extractor.evaluation import INK_VARIANTS, evaluate_extractor, ink_variant
from signver_torch.metrics import same_text_distances, same_text_metrics

CHINESE_WRITERS = ["070", "071", "072"]


def test_file_names_declare_text_and_medium(small_data: Path) -> None:
    records = discover_signatures(small_data / "chinese")
    assert sorted({r.writer for r in records}) == CHINESE_WRITERS and len(records) == 36
    first = records[0]
    assert first.path.name == "n01_ipad.png" and (first.text, first.medium) == ("n01", "ipad")
    assert {r.medium for r in records} == {"paper", "ipad", "phone-hand", "phone-table"}
    cedar = discover_signatures(small_data / "cedar")
    assert all(r.text is None and r.medium is None for r in cedar), "CEDAR names declare no text"
    assert class_key(first, "writer_text") == "070/n01" and class_key(cedar[0], "writer_text") == cedar[0].writer
    with pytest.raises(DataError, match="classes must be one of"):
        class_key(first, "text")


def test_writer_text_classes_and_same_text_batches(small_data: Path) -> None:
    records = discover_signatures([small_data / "cedar", small_data / "chinese"])
    labels, keys = class_labels(records, "writer_text")
    assert len(keys) == 6 + 9 and "chinese:071/n02" in keys and "cedar:35" in keys
    assert (labels % 2 == 1).sum() == sum(r.forged for r in records)
    texts = [key.partition("/")[2] or None for key in keys]
    sampler = WriterBatchSampler(labels, writers_per_batch=3, per_class=2, seed=3, texts=texts)
    batches = [batch for epoch in range(6) for batch in (sampler.set_epoch(epoch), list(sampler))[1]]
    drawn: Counter[str] = Counter()
    for batch in batches:
        classes = {keys[int(label) // 2] for label in labels[batch]}
        batch_texts = {key.partition("/")[2] for key in classes}
        if "" not in batch_texts:  # a same-text batch: three writers writing one name
            assert len(batch_texts) == 1 and len({key.partition("/")[0] for key in classes}) == 3
        else:
            assert batch_texts == {""}, "classes with and without a text never share a batch"
        drawn.update(records[i].source for i in batch)
    # every group's signatures are drawn at about the same rate, however small its classes
    sizes = Counter(r.source for r in records)
    assert 0.6 < (drawn["chinese"] / sizes["chinese"]) / (drawn["cedar"] / sizes["cedar"]) < 1.6, drawn


def test_same_text_protocol_counts_and_separates() -> None:
    # 3 writers x 2 names x 2 media; a perfect writer code, then a pure content code
    torch.manual_seed(0)
    writers = [w for w in "abc" for _ in range(4)]
    texts = ["n01", "n01", "n02", "n02"] * 3
    media = ["paper", "ipad"] * 6
    writer_code = torch.eye(3).repeat_interleave(4, 0) + 0.01 * torch.randn(12, 3)
    positive, negative = same_text_distances(writer_code, writers, texts, media)
    assert sum(p.numel() for p in positive) == 3 * 2  # per writer and name: one pair
    assert sum(n.numel() for n in negative) == 12 * 2 * 2  # each signature against 2 writers x 2 copies of its name
    assert same_text_metrics(writer_code, writers, texts, media)["eer"] == 0.0
    content_code = torch.tensor([[1.0, 0.0] if t == "n01" else [0.0, 1.0] for t in texts]) + 0.01 * torch.randn(12, 2)
    assert same_text_metrics(content_code, writers, texts, media)["eer"] >= 0.4
    cross = same_text_distances(writer_code, writers, texts, media, pairing="cross")
    assert sum(n.numel() for n in cross[1]) == 12 * 2  # impostors on the other medium only
    same = same_text_distances(writer_code, writers, texts, media, pairing="same", positive_texts="any")
    assert sum(p.numel() for p in same[0]) == 3 * 2  # a writer's two names on one medium
    with pytest.raises(ValueError, match="pairing"):
        same_text_distances(writer_code, writers, texts, media, pairing="both")


def test_evaluate_judges_declared_texts_against_same_text_impostors(small_data: Path) -> None:
    report = evaluate_extractor([small_data / "dutch", small_data / "chinese"], progress=False)
    dutch, chinese = report["per_source"]["dutch"], report["per_source"]["chinese"]
    assert dutch["negatives"] == "skilled" and "same_text_cross_media" not in dutch
    assert chinese["negatives"] == "same_text" and chinese["n_writers"] == 3
    assert chinese["n_pos"] == 3 * 3 * 6 and chinese["n_neg"] == 36 * 2 * 4  # same name: 6 pairs; 2 other writers x 4
    assert 0 <= chinese["eer_ci"][0] <= chinese["eer"] <= chinese["eer_ci"][1] <= 1
    assert set(chinese["same_text_by_medium"]) == {"paper", "ipad", "phone-hand", "phone-table"}
    assert chinese["same_text_cross_media"]["n_pos"] == chinese["n_pos"]  # a name is written once per medium
    # pooled: Dutch positives and forgeries beside the Chinese same-name pairs and impostors
    assert report["negatives"] == "skilled+same_text"
    assert report["n_pos"] == dutch["n_pos"] + chinese["n_pos"] and report["n_neg"] == dutch["n_neg"] + chinese["n_neg"]
    json.dumps(report)  # the --json contract


def test_the_gallery_protocol_enrols_each_declared_text_and_claims_other_writers_of_it(small_data: Path) -> None:
    """``--references`` over Dutch (forgeries) and Chinese (none, texts declared): a Chinese writer is enrolled once per
    name (its first 3 media by file name), claims its fourth, and every other writer's signatures of that name are the
    impostors; where no text has more than K signatures, the source is named as not measurable instead."""
    report = evaluate_extractor([small_data / "dutch", small_data / "chinese"], references=3, progress=False)
    for entry in report["references"]["rules"].values():
        chinese, dutch = entry["per_source"]["chinese"], entry["per_source"]["dutch"]
        assert chinese["impostors"] == "same text, other writers" and dutch["impostors"] == "skilled forgeries"
        assert chinese["n_writers"] == 3 and chinese["n_genuine_claims"] == 3 * 3  # 3 names, one claim each
        assert chinese["n_forgery_claims"] == 3 * 3 * 2 * 4  # per name: the 2 other writers' 4 media
        assert dutch["n_forgery_claims"] + chinese["n_forgery_claims"] == entry["n_forgery_claims"]
        assert 0 <= chinese["eer_ci"][0] <= chinese["eer"] <= chinese["eer_ci"][1] <= 1
        assert entry["impostors"] == "same text, other writers and skilled forgeries" and entry["n_writers"] == 6
    four = evaluate_extractor([small_data / "dutch", small_data / "chinese"], references=4, progress=False)
    for entry in four["references"]["rules"].values():
        assert set(entry["per_source"]) == {"dutch"} and set(entry["per_source_unmeasured"]) == {"chinese"}
    json.dumps(report)


def test_stroke_and_tone_augmentation_keep_the_shape_of_the_ink() -> None:
    torch.manual_seed(0)
    ink = torch.zeros(64, 1, 24, 24)
    ink[:, :, 6:18, 10:14] = 0.8
    thin_only = StrokeWidthJitter(p=0.0, thin_p=1.0, max_strength=1.0)(ink)
    thick_only = StrokeWidthJitter(p=1.0, thin_p=0.0, max_strength=1.0)(ink)
    assert (thin_only.sum((1, 2, 3)) <= ink.sum((1, 2, 3)) + 1e-5).all() and thin_only.sum() < ink.sum()
    assert (thick_only.sum((1, 2, 3)) >= ink.sum((1, 2, 3)) - 1e-5).all() and thick_only.sum() > ink.sum()
    assert (thin_only[:, :, :6] == 0).all(), "thinning never draws ink where there was none"
    toned = InkGamma(p=1.0)(ink)
    assert (toned[ink == 0] == 0).all() and toned.max() <= 1
    assert toned[:, :, 10, 11].unique().numel() > 10, "each canvas gets its own tone"


def test_ink_variants_alter_only_the_ink(small_data: Path) -> None:
    from signver_torch.io import load_image_tensor

    gray = load_image_tensor(small_data / "cedar" / "full_org" / "original_35_1.png", "L")
    ink = (gray < 0.5).sum()
    assert (ink_variant(gray, "thinner") < 0.5).sum() < ink < (ink_variant(gray, "thicker") < 0.5).sum()
    lighter, darker = ink_variant(gray, "lighter"), ink_variant(gray, "darker")
    assert lighter.min() > gray.min() and darker.mean() < gray.mean() and lighter.shape == gray.shape
    white = torch.ones(1, 20, 30)
    assert all(torch.equal(ink_variant(white, v), white) for v in INK_VARIANTS)
    with pytest.raises(SignVerError, match="unknown ink variant"):
        ink_variant(gray, "blurred")


def test_evaluate_measures_ink_robustness(small_data: Path) -> None:
    report = evaluate_extractor([small_data / "cedar", small_data / "chinese"], "cedar:35-37,chinese:070-072",
                                ink_variants=True, progress=False)
    robustness = report["ink_robustness"]
    assert set(robustness) == set(INK_VARIANTS)
    for variant, measured in robustness.items():
        assert 0 < measured["self_distance_median"] < 1, variant
        assert measured["n_refused"] == 0, variant  # the fixture's scans all keep their ink
        assert measured["per_source"]["cedar"]["n_pos"] == 2 * report["per_source"]["cedar"]["n_pos"]  # both orders
        assert measured["per_source"]["chinese"]["negatives"] == "same_text"
        assert "same_text_cross_media" in measured["per_source"]["chinese"]


def test_an_altered_query_left_without_ink_counts_as_refused(small_data: Path) -> None:
    """``embed_records(refused_as_zero=True)``: a scan the alteration left blank embeds as the zero vector (cosine distance
    1 from every reference) and the others as they would alone; without it, the blank scan is an error naming its file."""
    from signver_torch.extractor.api import MetricExtractor
    from signver_torch.extractor.evaluation import embed_records

    extractor = MetricExtractor(device="cpu").load("default")
    records = discover_signatures(small_data / "chinese")[:6]
    calls = iter(range(len(records) * 2))

    def every_other_blank(image: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(image) if next(calls) % 2 else image

    as_scanned, _ = embed_records(extractor, records, progress=False)
    altered, _ = embed_records(extractor, records, progress=False, transform=every_other_blank, refused_as_zero=True)
    assert torch.equal(altered[1::2], torch.zeros(3, altered.shape[1]))
    torch.testing.assert_close(altered[::2], as_scanned[::2], atol=1e-5, rtol=0)
    with pytest.raises(SignVerError, match=records[0].path.name):
        embed_records(extractor, records, progress=False, transform=torch.ones_like)


def test_canvas_cache_gives_the_same_canvases_and_survives_a_bad_entry(small_data: Path, tmp_path: Path) -> None:
    from signver_torch.extractor.data import canvas_cache_path, preprocess_records
    from signver_torch.extractor.transforms import SignaturePreprocessor

    records = discover_signatures(small_data / "chinese")[:12]
    preprocessor = SignaturePreprocessor()
    fresh = preprocess_records(records, preprocessor)
    stored = preprocess_records(records, preprocessor, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*/*.safetensors"))) == 12
    canvas_cache_path(records[3], preprocessor, tmp_path).write_bytes(b"half a file")
    again = preprocess_records(records[::-1], preprocessor, cache_dir=tmp_path)  # any order, any subset
    assert torch.equal(stored[0], fresh[0]) and torch.equal(again[0], fresh[0].flip(0))
    other = SignaturePreprocessor(height=64, width=96)
    assert canvas_cache_path(records[0], other, tmp_path) != canvas_cache_path(records[0], preprocessor, tmp_path)
