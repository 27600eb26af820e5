"""Signature embedding networks: a ResNet, any timm backbone or SigNet + projection head + L2 normalisation.

Plain ``nn.Module``s and builders, no Lightning and no I/O: the input is the preprocessed ink canvas
``(N, 1, H, W)`` from :class:`~signver_torch.extractor.transforms.SignaturePreprocessor`.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet

EMBEDDING_DIM = 256



class SigNet(nn.Module):
    """SigNet (Hafemann et al., 2017), the classic signature CNN, as a backbone for comparison.

    The original uses 150x220 inputs and two 2048-d fully connected layers; global average pooling
    replaces the fixed-size flatten so any canvas size works.
    """

    def __init__(self, in_chans: int = 1, width: float = 1.0) -> None:
        super().__init__()

        def channels(n: int) -> int:
            return max(8, int(n * width))

        def block(cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, kernel, stride, padding, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        c1, c2, c3, c5 = channels(96), channels(256), channels(384), channels(256)
        self.features = nn.Sequential(
            *block(in_chans, c1, 11, stride=4),
            nn.MaxPool2d(3, 2),
            *block(c1, c2, 5, padding=2),
            nn.MaxPool2d(3, 2),
            *block(c2, c3, 3, padding=1),
            *block(c3, c3, 3, padding=1),
            *block(c3, c5, 3, padding=1),
            nn.AdaptiveAvgPool2d((3, 5)),
            nn.Flatten(),
            nn.Linear(c5 * 15, 2048, bias=False),
            nn.BatchNorm1d(2048),
            nn.ReLU(inplace=True),
        )
        self.num_features = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class SignatureEmbedder(nn.Module):
    """Backbone → linear projection → L2-normalised embedding (cosine distance = 1 - dot product).

    ``normalize_features`` L2-normalises the backbone's features before the projection, as a
    :func:`principal_projection` fitted on normalised features expects.
    """

    def __init__(
        self, backbone: nn.Module, num_features: int, embedding_dim: int = EMBEDDING_DIM, normalize_features: bool = False
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(0.1), nn.Linear(num_features, embedding_dim))
        self.embedding_dim = embedding_dim
        self.normalize_features = normalize_features

    def features(self, canvas: torch.Tensor) -> torch.Tensor:
        """The backbone's pooled features, as the projection head receives them."""
        features = self.backbone(canvas)
        return F.normalize(features, dim=1) if self.normalize_features else features

    def forward(self, canvas: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.features(canvas)), dim=1)


def principal_projection(features: torch.Tensor, embedding_dim: int = EMBEDDING_DIM) -> nn.Linear:
    """A linear map onto the top ``embedding_dim`` principal axes of ``features`` (centred on their mean).

    Fitted on the (L2-normalised) backbone features of the training writers, it replaces the trained
    projection head: the head's training fits the training writers' classes, while the backbone
    features and the directions in which they vary carry over better to writers never seen
    (docs/extractor.md has the measurements).
    """
    if features.ndim != 2 or features.shape[0] <= embedding_dim:
        raise ValueError(
            f"fitting a {embedding_dim}-d projection needs more than {embedding_dim} feature vectors, got {tuple(features.shape)}"
        )
    features = features.double()
    mean = features.mean(0)
    _, _, axes = torch.linalg.svd(features - mean, full_matrices=False)
    weight = axes[:embedding_dim]
    linear = nn.Linear(features.shape[1], embedding_dim)
    with torch.no_grad():
        linear.weight.copy_(weight.float())
        linear.bias.copy_((-weight @ mean).float())
    return linear


class SiameseVerifier(nn.Module):
    """Scores a pair through one shared embedder: cosine distance in ``[0, 2]`` (0 = identical)."""

    def __init__(self, embedder: SignatureEmbedder) -> None:
        super().__init__()
        self.embedder = embedder

    def forward(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        both = self.embedder(torch.cat([first, second]))
        a, b = both.split(first.shape[0])
        return 1 - (a * b).sum(1)


#: ResNets that torchvision builds module for module like timm's ``resnet*`` (same layers, names and
#: initialisation), so these checkpoints load without importing timm, which costs seconds at start-up.
TORCHVISION_RESNETS: dict[str, Callable[..., resnet.ResNet]] = {
    "resnet18": resnet.resnet18,
    "resnet34": resnet.resnet34,
    "resnet50": resnet.resnet50,
}


def torchvision_resnet(name: str, in_chans: int = 1) -> tuple[nn.Module, int]:
    """timm's ``create_model(name, num_classes=0, in_chans=in_chans)`` for a ResNet, built by torchvision:
    the stem takes ``in_chans`` channels, the classifier is removed and the last BN of each block starts
    at zero (timm's ``zero_init_last``)."""
    net = TORCHVISION_RESNETS[name](weights=None, zero_init_residual=True)
    net.conv1 = nn.Conv2d(in_chans, net.conv1.out_channels, kernel_size=7, stride=2, padding=3, bias=False)
    nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
    num_features = net.fc.in_features
    net.fc = nn.Identity()
    return net, num_features


def build_backbone(name: str, in_chans: int = 1, **kwargs: Any) -> tuple[nn.Module, int]:
    """A feature extractor and its output width: ``"signet"``, a ResNet or any timm model name."""
    if name == "signet":
        net = SigNet(in_chans=in_chans, **kwargs)
        return net, net.num_features
    if name in TORCHVISION_RESNETS and not kwargs:
        return torchvision_resnet(name, in_chans)
    import timm  # only for backbones torchvision does not build

    if name not in timm.list_models():
        raise ValueError(f"unknown backbone {name!r}: use 'signet' or a timm model name (timm.list_models())")
    net = timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **kwargs)
    return net, net.num_features


def build_extractor(
    backbone: str = "resnet18",
    embedding_dim: int = EMBEDDING_DIM,
    in_chans: int = 1,
    normalize_features: bool = False,
    **backbone_kwargs: Any,
) -> SignatureEmbedder:
    """Build a signature embedder, e.g. ``build_extractor("resnet18")`` or ``build_extractor("signet")``.

    Weights start random: nothing is downloaded (train with ``signver train extractor`` or load a
    checkpoint with :class:`~signver_torch.extractor.api.MetricExtractor`).
    """
    net, features = build_backbone(backbone, in_chans=in_chans, **backbone_kwargs)
    return SignatureEmbedder(net, features, embedding_dim, normalize_features)


def extractor_from_card(card: dict[str, Any]) -> SignatureEmbedder:
    """The network an extractor checkpoint card's ``architecture`` describes (weights not loaded):
    the one rebuild path of the facade, fine-tuning and the detector's backbone initialisation."""
    return build_extractor(**card["architecture"])
