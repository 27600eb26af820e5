"""Metrics (``metrics.py``): EER/AUC and the pair protocol on known distances, box metrics, cleaning metrics,
bootstrap intervals."""

from __future__ import annotations

import pytest
import torch

from signver_torch.data.detection import CLASS_NAMES
from signver_torch.errors import DataError
from signver_torch.metrics import (
    DetectionMetrics,
    bootstrap_eer_interval,
    cleaning_metrics,
    equal_error_rate,
    verification_metrics,
    writer_protocol_distances,
    writer_protocol_metrics,
)


def test_detection_metrics_of_perfect_and_missed_boxes() -> None:
    target = {"boxes": torch.tensor([[10.0, 10, 100, 40], [200, 200, 260, 220]]), "labels": torch.tensor([1, 4])}
    metrics = DetectionMetrics(CLASS_NAMES)
    metrics.update([{**target, "scores": torch.tensor([0.9, 0.8])}], [target])
    perfect = metrics.compute()
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map50_date"] == pytest.approx(1.0)
    metrics.reset()
    metrics.update([{"boxes": target["boxes"][:1], "labels": target["labels"][:1], "scores": torch.tensor([0.9])}], [target])
    missed = metrics.compute()
    assert missed["map50_signature"] == pytest.approx(1.0) and missed["map50_date"] == pytest.approx(0.0)


def test_cleaning_metrics_of_identical_and_damaged_pages() -> None:
    page = torch.ones(2, 1, 64, 96)
    page[:, :, 30:34, 10:80] = 0.1
    perfect = cleaning_metrics(page, page)
    assert perfect["psnr"].tolist() == [100.0, 100.0] and perfect["ink_f1"].tolist() == [1.0, 1.0]
    lined = page.clone()
    lined[:, :, 50, :] = 0.2  # a ruled line the cleaner should have removed
    damaged = cleaning_metrics(lined, page)
    assert (damaged["psnr"] < 30).all() and (damaged["ink_f1"] < 0.9).all() and (damaged["ssim"] < 1).all()


def test_eer_of_known_distances() -> None:
    report = verification_metrics(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.35, 0.5, 0.6, 0.7]))
    assert report["eer"] == pytest.approx(0.25)
    assert report["auc"] == pytest.approx(15 / 16)
    assert report["far"] == pytest.approx(0.25) and report["frr"] == pytest.approx(0.25)
    assert (report["n_pos"], report["n_neg"]) == (4, 4)


def test_separable_and_inverted_distances() -> None:
    close, far = torch.linspace(0.0, 0.2, 50), torch.linspace(0.5, 1.0, 70)
    separable = verification_metrics(close, far)
    assert separable["eer"] == 0 and separable["auc"] == 1
    assert 0.2 <= separable["threshold_at_eer"] < 0.5
    inverted = verification_metrics(far, close)
    assert inverted["eer"] == 1 and inverted["auc"] == 0


def test_tied_distances_are_one_operating_point() -> None:
    collapsed = verification_metrics(torch.full((5,), 0.5), torch.full((7,), 0.5))
    assert collapsed["eer"] == pytest.approx(0.5) and collapsed["auc"] == pytest.approx(0.5)


def test_missing_pairs_are_a_data_error() -> None:
    with pytest.raises(DataError, match="0 same-writer"):
        verification_metrics(torch.tensor([]), torch.tensor([0.3]))
    with pytest.raises(DataError, match="at least 2 writers"):
        writer_protocol_metrics(torch.randn(3, 8), ["a"] * 3, [False] * 3)


def test_far_frr_at_a_given_threshold() -> None:
    report = verification_metrics(torch.tensor([0.1, 0.2, 0.3, 0.4]), torch.tensor([0.35, 0.5, 0.6, 0.7]), threshold=0.45)
    assert report["threshold"] == 0.45
    assert report["far"] == pytest.approx(0.25) and report["frr"] == 0


def test_protocol_pair_counts() -> None:
    # two writers, each 3 genuine + 2 forged
    writers = ["a"] * 5 + ["b"] * 5
    forged = [False, False, False, True, True] * 2
    pairs = writer_protocol_distances(torch.randn(10, 8), writers, forged)
    assert pairs["positive"].numel() == 2 * 3  # C(3,2) per writer
    assert pairs["skilled"].numel() == 2 * 3 * 2  # genuine x forged per writer
    assert pairs["random"].numel() == 3 * 3  # genuine across the two writers
    report = writer_protocol_metrics(torch.randn(10, 8), writers, forged)
    assert report["negatives"] == "skilled" and report["n_writers"] == 2
    genuine_only = writer_protocol_metrics(torch.randn(6, 8), ["a"] * 3 + ["b"] * 3, [False] * 6)
    assert genuine_only["negatives"] == "random" and genuine_only["n_neg"] == 9


def test_bootstrap_interval_brackets_the_eer_and_narrows_with_more_writers() -> None:
    generator = torch.Generator().manual_seed(0)

    def writers(n: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        pos = [0.3 + 0.1 * torch.randn(20, generator=generator, dtype=torch.double) for _ in range(n)]
        neg = [0.5 + 0.1 * torch.randn(20, generator=generator, dtype=torch.double) for _ in range(n)]
        return pos, neg

    few, many = writers(5), writers(80)
    eer, _ = equal_error_rate(torch.cat(many[0]), torch.cat(many[1]))
    low, high = bootstrap_eer_interval(*many, resamples=300)
    assert low < eer < high
    few_low, few_high = bootstrap_eer_interval(*few, resamples=300)
    assert (high - low) < (few_high - few_low)
