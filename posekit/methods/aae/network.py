"""The augmented autoencoder's network and loss (Sundermeyer et al., ECCV 2018, Sec. 3.2-3.4).

Encoder: 4 conv layers (5x5, stride 2, ReLU) and a linear layer to the latent code. Decoder: a
linear layer back to the encoder's last feature map, then 4 (nearest x2 upsample + 5x5 conv)
layers mirroring the encoder, the last one to RGB with a sigmoid. Presets with ``encoder="lite0"``
replace the encoder by the shared pretrained trunk and a trainable projection (:class:`PretrainedEncoder`);
the decoder and the loss stay the paper's. Loss: the bootstrapped L2 —
the mean squared error over only the hardest fraction of pixels of each image, which keeps the
decoder from spending its capacity on the (easy) black background and sharpens edges.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(min(32, channels // 2) if channels >= 4 else 1, channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be 'none' or 'group', got {kind!r}")


class Encoder(nn.Module):
    """(B, 3, S, S) images in [0, 1] -> (B, latent) codes (not normalised)."""

    def __init__(self, image_size: int, filters=(128, 256, 256, 512), latent: int = 128, norm: str = "none") -> None:
        super().__init__()
        if image_size % 2 ** len(filters):
            raise ValueError(f"image size {image_size} must be divisible by {2 ** len(filters)}")
        layers: list[nn.Module] = []
        c = 3
        for f in filters:
            layers += [nn.Conv2d(c, f, 5, stride=2, padding=2), _norm(norm, f), nn.ReLU(inplace=True)]
            c = f
        self.features = nn.Sequential(*layers)
        self.feat_shape = (c, image_size // 2 ** len(filters), image_size // 2 ** len(filters))
        self.fc = nn.Linear(c * self.feat_shape[1] * self.feat_shape[2], latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).flatten(1))


class PretrainedEncoder(nn.Module):
    """(B, 3, S, S) crops in [0, 1] -> (B, latent) codes through the shared pretrained trunk
    (``posekit.features.backbone``: ImageNet EfficientNet-Lite0 up to its stride-16 map, frozen up to
    ``freeze``; frozen to s16 it runs without gradients) and a trainable projection (1x1 conv + GroupNorm +
    ReLU, then a linear layer to the code), so the codes start from features learnt on real photos."""

    def __init__(self, image_size: int, latent: int = 128, freeze: str | None = "s16", width: int = 64) -> None:
        from posekit.features.backbone import Backbone

        super().__init__()
        if image_size % 16:
            raise ValueError(f"image size {image_size} must be divisible by 16 (the trunk's stride-16 map)")
        self.trunk = Backbone(freeze=freeze).truncate("s16")
        self.frozen = freeze == "s16"
        side = image_size // 16
        self.project = nn.Sequential(nn.Conv2d(Backbone.channels("s16"), width, 1, bias=False),
                                     _norm("group", width), nn.ReLU(inplace=True))
        self.fc = nn.Linear(width * side * side, latent)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            f = self.trunk(x, ("s16",))["s16"]
        return self.fc(self.project(f).flatten(1))


class Decoder(nn.Module):
    """(B, latent) codes -> (B, 3, S, S) images in [0, 1]; mirrors :class:`Encoder`."""

    def __init__(self, image_size: int, filters=(128, 256, 256, 512), latent: int = 128, norm: str = "none") -> None:
        super().__init__()
        n = len(filters)
        self.feat_shape = (filters[-1], image_size // 2**n, image_size // 2**n)
        self.fc = nn.Linear(latent, filters[-1] * self.feat_shape[1] * self.feat_shape[2])
        layers: list[nn.Module] = []
        widths = list(reversed(filters))[1:] + [3]  # e.g. 512 -> 256, 256, 128, 3
        c = filters[-1]
        for i, f in enumerate(widths):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, f, 5, padding=2)]
            if i < len(widths) - 1:
                layers += [_norm(norm, f), nn.ReLU(inplace=True)]
            c = f
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(z)).view(z.shape[0], *self.feat_shape)
        return torch.sigmoid(self.layers(x))


class AugmentedAutoencoder(nn.Module):
    """Encoder + decoder; ``forward`` reconstructs, :meth:`encode` gives L2-normalised codes for the codebook."""

    def __init__(self, image_size: int, filters=(128, 256, 256, 512), latent: int = 128, norm: str = "none",
                 encoder: str = "conv", trunk_freeze: str | None = "s16") -> None:
        super().__init__()
        self.image_size = int(image_size)
        if encoder == "conv":
            self.encoder = Encoder(image_size, filters, latent, norm)
        elif encoder == "lite0":
            self.encoder = PretrainedEncoder(image_size, latent, trunk_freeze)
        else:
            raise ValueError(f"unknown AAE encoder {encoder!r}; conv (the paper's) or lite0 (the pretrained trunk)")
        self.decoder = Decoder(image_size, filters, latent, norm)

    @classmethod
    def from_preset(cls, preset) -> AugmentedAutoencoder:
        return cls(preset.image_size, preset.filters, preset.latent, preset.norm, preset.encoder, preset.trunk_freeze)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) crops in [0, 1] -> (B, latent) unit-length codes (cosine similarity = dot product)."""
        return F.normalize(self.encoder(x), dim=1)


def bootstrapped_l2(pred: torch.Tensor, target: torch.Tensor, ratio: float = 0.25) -> torch.Tensor:
    """Mean squared error over the ``ratio`` hardest pixels of each image (pixel error summed over channels)."""
    err = ((pred - target) ** 2).sum(dim=1).flatten(1)  # (B, H*W)
    k = max(1, int(round(err.shape[1] * ratio)))
    return err.topk(k, dim=1, sorted=False).values.mean()
