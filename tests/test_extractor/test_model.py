"""The embedding models (``extractor/model.py``): unit vectors for any canvas, timm-free ResNets equal to
timm's, the siamese distance, the principal projection."""

from __future__ import annotations

import pytest
import torch

from signver_torch.extractor.model import SiameseVerifier, build_extractor, principal_projection


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
