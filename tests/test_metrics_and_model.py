"""EER/AUC and the pair protocol on known distances; the embedding models; a real training signal."""

from __future__ import annotations

import pytest
import torch

from signver_torch.errors import DataError
from signver_torch.extractor.data import SignatureAugment
from signver_torch.extractor.lit import ExtractorModule
from signver_torch.extractor.model import SiameseVerifier, build_extractor, principal_projection
from signver_torch.metrics import verification_metrics, writer_protocol_distances, writer_protocol_metrics


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


@pytest.mark.parametrize("backbone", ["resnet18", "regnetx_004", "signet"])
def test_embedders_give_unit_vectors_for_any_canvas(backbone: str) -> None:
    model = build_extractor(backbone).eval()
    with torch.no_grad():
        for shape in ((3, 1, 112, 192), (2, 1, 150, 220)):
            embedding = model(torch.rand(shape))
            assert embedding.shape == (shape[0], 256)
            assert torch.allclose(embedding.norm(dim=1), torch.ones(shape[0]), atol=1e-5)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_resnets_are_timms_layer_for_layer(name: str) -> None:
    """The ResNets built without timm (fast start) take timm's weights and give timm's features."""
    import timm

    from signver_torch.extractor.model import torchvision_resnet

    reference = timm.create_model(name, pretrained=False, num_classes=0, in_chans=1).eval()
    built, num_features = torchvision_resnet(name, in_chans=1)
    assert num_features == reference.num_features
    state = reference.state_dict()
    assert {k: v.shape for k, v in built.state_dict().items()} == {k: v.shape for k, v in state.items()}

    def zero_started(net_state: dict) -> set[str]:  # the blocks' last BN starts at zero in both (timm's zero_init_last)
        return {key for key, value in net_state.items() if key.endswith("weight") and value.ndim == 1 and not value.any()}

    assert zero_started(built.state_dict()) == zero_started(state) != set()
    built.load_state_dict(state)
    canvas = torch.rand(2, 1, 112, 192)
    with torch.no_grad():
        torch.testing.assert_close(built.eval()(canvas), reference(canvas))


def test_siamese_distance_is_zero_for_the_same_input() -> None:
    verifier = SiameseVerifier(build_extractor("regnetx_004")).eval()
    canvas = torch.rand(2, 1, 112, 192)
    with torch.no_grad():
        distance = verifier(canvas, canvas)
        other = verifier(canvas, canvas.flip(-1))
    assert torch.allclose(distance, torch.zeros(2), atol=1e-5)
    assert (other > 1e-4).all()


def test_unknown_backbone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown backbone"):
        build_extractor("not_a_model")


def test_augmentation_keeps_shape_range_and_ink() -> None:
    torch.manual_seed(0)
    canvas = torch.zeros(8, 1, 112, 192)
    canvas[:, :, 50:60, 40:150] = 1.0
    out = SignatureAugment()(canvas)
    assert out.shape == canvas.shape and out.min() >= 0 and out.max() <= 1
    assert (out.flatten(1).sum(1) > 0.3 * canvas.flatten(1).sum(1)).all()
    assert not torch.allclose(out, canvas)


def fit_fixed_batch(module: ExtractorModule, optimizer: torch.optim.Optimizer, steps: int) -> list[float]:
    """``steps`` optimiser steps of the module's loss and miner on one sparse random batch of 4 classes;
    returns the losses."""
    canvas = torch.rand(16, 1, 112, 192) * (torch.rand(16, 1, 112, 192) > 0.9)
    labels = torch.arange(4).repeat_interleave(4)
    losses = []
    for _ in range(steps):
        embeddings = module(canvas)
        loss = module.loss_fn(embeddings, labels, module.miner(embeddings, labels))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_training_steps_pull_same_class_together() -> None:
    """A few optimiser steps on a fixed batch lower the metric-learning loss (the loop really learns)."""
    torch.manual_seed(0)
    module = ExtractorModule(backbone="resnet10t", loss="multi_similarity", augment=False)
    losses = fit_fixed_batch(module, torch.optim.AdamW(module.parameters(), lr=1e-3), steps=8)
    assert losses[-1] < 0.8 * losses[0]


def test_frozen_layers_keep_their_weights_and_statistics_while_the_rest_trains() -> None:
    """``freeze``: frozen submodules get no gradient, are left out of the optimiser and keep their
    batch-norm statistics in training mode; the unfrozen layers still move."""
    torch.manual_seed(0)
    frozen_names = ["backbone.conv1", "backbone.bn1", "backbone.layer1"]
    module = ExtractorModule(backbone="resnet10t", loss="multi_similarity", augment=False, freeze=frozen_names)
    before = {name: tensor.clone() for name, tensor in module.model.state_dict().items()}
    optimizer = module.optimization(total_steps=4)["optimizer"]
    assert sum(p.numel() for group in optimizer.param_groups for p in group["params"]) == sum(
        p.numel() for p in module.model.parameters() if p.requires_grad) < sum(p.numel() for p in module.model.parameters())
    module.train()
    assert not module.model.backbone.layer1.training and module.model.backbone.layer2.training
    fit_fixed_batch(module, optimizer, steps=2)
    after = module.model.state_dict()
    for name, tensor in before.items():
        frozen = any(name.startswith(prefix + ".") for prefix in frozen_names)
        assert torch.equal(after[name], tensor) == frozen or "num_batches_tracked" in name, name
    with pytest.raises(ValueError, match="no submodule 'backbone.layer9'.*backbone, head"):
        ExtractorModule(backbone="resnet10t", freeze=["backbone.layer9"])


def test_weight_average_trails_the_trained_weights() -> None:
    module = ExtractorModule(backbone="signet", ema_decay=0.9, augment=False)
    assert module.export_model is module.ema.module
    module.on_train_batch_end(None, None, 0)  # the first update copies the weights
    first = next(module.model.parameters()).detach().clone()
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(1.0)
    module.on_train_batch_end(None, None, 1)
    averaged = next(module.export_model.parameters())
    torch.testing.assert_close(averaged, first + 0.1)
    plain = ExtractorModule(backbone="signet")
    assert plain.ema is None and plain.export_model is plain.model


def test_principal_projection_keeps_the_distances_of_features_in_a_subspace() -> None:
    """Features spanning 3 directions of a 20-d space: 5 principal axes keep every pairwise distance,
    centre the mean on zero, and are orthonormal."""
    torch.manual_seed(0)
    basis = torch.linalg.qr(torch.randn(20, 3)).Q.T
    features = torch.randn(40, 3) @ basis * 4 + torch.randn(20)
    linear = principal_projection(features, 5)
    with torch.no_grad():
        projected = linear(features)
    exact = "donot_use_mm_for_euclid_dist"
    assert torch.allclose(torch.cdist(projected, projected, compute_mode=exact), torch.cdist(features, features, compute_mode=exact), atol=1e-4)
    assert torch.allclose(projected.mean(0), torch.zeros(5), atol=1e-4)
    assert torch.allclose(linear.weight @ linear.weight.T, torch.eye(5), atol=1e-5)
    with pytest.raises(ValueError, match="more than 5 feature vectors"):
        principal_projection(features[:5], 5)
