"""The refiner network: (observed crop, rendered crop, rendered mask) -> pose update + observed visible mask.

Input: 7 channels stacked -- observed RGB (3), RGB rendered at the current pose (3) and its mask
(1) -- all in the same zoom-in crop, values in [0, 1]. Presets may add, inside the network, the
difference observed - rendered (3) and CoordConv channels (normalised x, y of the crop, 2; Liu
et al. 2018). Outputs (see ``update.py`` for the meaning):

* ``rot6d`` (B, 6): the camera-frame rotation update in the continuous 6D form, initialised to
  the identity (the last layer starts at tiny weights with the identity as bias), so an untrained
  refiner leaves poses (almost) unchanged;
* ``v`` (B, 3): (vx, vy, vz), initialised to 0;
* ``mask_logits`` (B, 1, H/4, W/4): the object's visible mask in the *observed* crop (DeepIM's
  auxiliary output; ``polish`` aligns the silhouette with it).

:class:`RefineNet` (the from-scratch presets) -- backbone: a stride-2 stem and one stride-2 stage per entry of ``widths`` after the first, each
with ``blocks_per_stage`` residual blocks (GroupNorm + ReLU: batch statistics do not matter, so
batch 1 at test time behaves as in training). The last feature map is pooled to a small grid (keeps
where things are, which the translation needs) and flattened into two fully connected layers.
:class:`PretrainedRefineNet` (presets with a ``trunk``) puts the same head on the shared pretrained
backbone; :func:`build_network` picks by preset.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from posekit.features.similarity import local_correlation
from posekit.geometry.rotations import rot6d_to_matrix
from posekit.methods.refine.presets import RefinePreset

IN_CHANNELS = 7
#: PretrainedRefineNet's ways of combining the observed and rendered maps (RefinePreset.combine)
COMBINE = ("concat", "corr")
#: radius in cells of the "corr" combine's local correlation at each stride (s8: +-24 px of a 128-px crop)
CORR_RADIUS = {"s8": 3, "s16": 2}
IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _gn(channels: int, groups: int) -> nn.GroupNorm:
    g = groups
    while channels % g:
        g //= 2
    return nn.GroupNorm(max(g, 1), channels)


def _conv_gn(cin: int, cout: int, stride: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), _gn(cout, groups), nn.ReLU(inplace=True))


class ResBlock(nn.Module):
    """Two 3x3 convs with GroupNorm and an identity shortcut (He et al. 2016, pre-GroupNorm variant)."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.n1 = _gn(channels, groups)
        self.c2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.n2 = _gn(channels, groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.n1(self.c1(x)), inplace=True)
        return F.relu(x + self.n2(self.c2(y)), inplace=True)


@dataclass
class RefineOutput:
    """What the network predicts for a batch."""

    rot6d: torch.Tensor  # (B, 6)
    v: torch.Tensor  # (B, 3) = (vx, vy, vz)
    mask_logits: torch.Tensor  # (B, 1, H/4, W/4)

    @property
    def dR(self) -> torch.Tensor:
        """(B, 3, 3) rotation update (camera frame)."""
        return rot6d_to_matrix(self.rot6d)


class RefineNet(nn.Module):
    """DeepIM-style refiner for any number of objects (the rendering tells it which object it sees)."""

    def __init__(self, preset: RefinePreset) -> None:
        super().__init__()
        w, g = preset.widths, preset.groups
        if len(w) < 2:
            raise ValueError("RefinePreset.widths needs at least two stages")
        self.crop_size = tuple(preset.crop_size)
        self.coord_channels, self.diff_channels = bool(preset.coord_channels), bool(preset.diff_channels)
        cin0 = IN_CHANNELS + 2 * self.coord_channels + 3 * self.diff_channels
        self.stem = _conv_gn(cin0, w[0], 2, g)
        stages = []
        for cin, cout in zip(w[:-1], w[1:], strict=True):
            layers: list[nn.Module] = [_conv_gn(cin, cout, 2, g)]
            layers += [ResBlock(cout, g) for _ in range(preset.blocks_per_stage)]
            stages.append(nn.Sequential(*layers))
        self.stages = nn.ModuleList(stages)
        gp = int(preset.pool_grid)
        self.pool = nn.AdaptiveAvgPool2d((gp, gp))
        # Leaky: with plain ReLUs the first FC layer of the cpu preset died within ~1k steps (every unit
        # negative for every input), leaving the pose heads a constant "no update" -- measured, not guessed.
        self.fc = nn.Sequential(
            nn.Linear(w[-1] * gp * gp, preset.fc_width), nn.LeakyReLU(0.1, inplace=True),
            nn.Linear(preset.fc_width, preset.fc_width), nn.LeakyReLU(0.1, inplace=True),
        )
        self.rot_head = nn.Linear(preset.fc_width, 6)
        self.trans_head = nn.Linear(preset.fc_width, 3)
        # mask decoder: stride-8 features upsampled onto the stride-4 ones
        c4 = w[1]
        c8 = w[2] if len(w) > 2 else w[1]
        self.mask_fuse = _conv_gn(c4 + c8, c4, 1, g)
        self.mask_out = nn.Conv2d(c4, 1, 1)
        with torch.no_grad():  # near-identity start; small (not zero) weights let gradients reach the backbone
            self.rot_head.weight.normal_(0.0, 1e-3)
            self.rot_head.bias.copy_(torch.tensor(IDENTITY_6D))
            self.trans_head.weight.normal_(0.0, 1e-3)
            self.trans_head.bias.zero_()

    @staticmethod
    def stack_inputs(observed: torch.Tensor, rendered: torch.Tensor, rendered_mask: torch.Tensor) -> torch.Tensor:
        """(B, 7, H, W) network input from crops (B, 3, H, W), (B, 3, H, W), (B, 1, H, W) in [0, 1]."""
        return torch.cat([observed, rendered, rendered_mask], dim=1)

    def forward(self, x: torch.Tensor) -> RefineOutput:
        if x.shape[1] != IN_CHANNELS:
            raise ValueError(f"RefineNet expects {IN_CHANNELS} input channels, got {x.shape[1]}")
        extra = []
        if self.diff_channels:
            extra.append(x[:, 0:3] - x[:, 3:6] + 0.5)  # centred like the rest after the shift below
        if self.coord_channels:
            B, _, H, W = x.shape
            ys = torch.linspace(0.0, 1.0, H, device=x.device, dtype=x.dtype)
            xs = torch.linspace(0.0, 1.0, W, device=x.device, dtype=x.dtype)
            extra += [xs.view(1, 1, 1, W).expand(B, 1, H, W), ys.view(1, 1, H, 1).expand(B, 1, H, W)]
        x = torch.cat([x, *extra], dim=1) - 0.5 if extra else x - 0.5
        feats = []
        h = self.stem(x)
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        f4 = feats[0]
        f8 = feats[1] if len(feats) > 1 else feats[0]
        up = F.interpolate(f8, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        mask = self.mask_out(self.mask_fuse(torch.cat([f4, up], dim=1)))
        f = self.fc(self.pool(h).flatten(1))
        return RefineOutput(rot6d=self.rot_head(f), v=self.trans_head(f), mask_logits=mask)


class PretrainedRefineNet(nn.Module):
    """The refiner on the shared pretrained trunk (presets with ``trunk="lite0"``): same input and outputs as
    :class:`RefineNet`.

    Observed and rendered crops go through one EfficientNet-Lite0 (``posekit.features.backbone``; shared
    weights, ImageNet normalisation inside). At stride 8 and 16 the two maps are combined (``preset.combine``)
    as [observed, rendered, observed - rendered, per-cell cosine] ("concat") or as [local cosine correlation
    volume, rendered] ("corr": the observed photo enters only through cosines) (+ the rendered mask's cell coverage and,
    with ``coord_channels``, the crop's x, y at s8); trainable GroupNorm convs fuse s8 (brought to s16 by a
    stride-2 conv) with s16, one more stride-2 stage, the pooled grid and the FC layers give the update.
    The visible mask is decoded from the observed s4 map and the fused s8 features. With the trunk frozen up
    to s16 (the CPU presets) it runs without gradients, so training costs only the head's backward pass.
    """

    def __init__(self, preset: RefinePreset) -> None:
        from posekit.features.backbone import Backbone

        super().__init__()
        if preset.trunk != "lite0":
            raise ValueError(f"unknown refiner trunk {preset.trunk!r}; the one there is: lite0")
        w, g = preset.widths, preset.groups
        if len(w) != 2:
            raise ValueError("a pretrained-trunk preset gives two head widths (s16 and s32 stages)")
        self.crop_size = tuple(preset.crop_size)
        self.coord_channels = bool(preset.coord_channels)
        self.trunk = Backbone(freeze=preset.trunk_freeze).truncate("s16")
        self.frozen = preset.trunk_freeze == "s16"
        if preset.combine not in COMBINE:
            raise ValueError(f"unknown refiner combine {preset.combine!r}; choose one of {', '.join(COMBINE)}")
        self.combine = preset.combine
        c4, c8, c16 = (Backbone.channels(n) for n in ("s4", "s8", "s16"))
        if self.combine == "corr":  # correlation volume + the rendered map (the render's own domain)
            p8, p16 = (2 * CORR_RADIUS["s8"] + 1) ** 2 + c8, (2 * CORR_RADIUS["s16"] + 1) ** 2 + c16
        else:  # observed, rendered, difference, cosine
            p8, p16 = 3 * c8 + 1, 3 * c16 + 1
        self.fuse8 = _conv_gn(p8 + 1 + 2 * self.coord_channels, w[0], 1, g)
        self.down8 = _conv_gn(w[0], w[0], 2, g)
        self.fuse16 = _conv_gn(p16 + 1 + w[0], w[0], 1, g)
        self.stage32 = _conv_gn(w[0], w[1], 2, g)
        gp = int(preset.pool_grid)
        self.pool = nn.AdaptiveAvgPool2d((gp, gp))
        self.fc = nn.Sequential(
            nn.Linear(w[1] * gp * gp, preset.fc_width), nn.LeakyReLU(0.1, inplace=True),
            nn.Linear(preset.fc_width, preset.fc_width), nn.LeakyReLU(0.1, inplace=True),
        )
        self.rot_head = nn.Linear(preset.fc_width, 6)
        self.trans_head = nn.Linear(preset.fc_width, 3)
        self.mask_fuse = _conv_gn(c4 + w[0], 32, 1, g)
        self.mask_out = nn.Conv2d(32, 1, 1)
        with torch.no_grad():  # near-identity start, as RefineNet
            self.rot_head.weight.normal_(0.0, 1e-3)
            self.rot_head.bias.copy_(torch.tensor(IDENTITY_6D))
            self.trans_head.weight.normal_(0.0, 1e-3)
            self.trans_head.bias.zero_()

    def _pair(self, fo: torch.Tensor, fr: torch.Tensor, name: str) -> torch.Tensor:
        if self.combine == "corr":
            return torch.cat([local_correlation(fo, fr, CORR_RADIUS[name]), fr], dim=1)
        cos = (F.normalize(fo, dim=1) * F.normalize(fr, dim=1)).sum(1, keepdim=True)
        return torch.cat([fo, fr, fo - fr, cos], dim=1)

    def forward(self, x: torch.Tensor) -> RefineOutput:
        if x.shape[1] != IN_CHANNELS:
            raise ValueError(f"PretrainedRefineNet expects {IN_CHANNELS} input channels, got {x.shape[1]}")
        B = x.shape[0]
        crops = torch.cat([x[:, 0:3], x[:, 3:6]], dim=0)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.frozen):
            f = self.trunk(crops, ("s4", "s8", "s16"))
        f4, f8, f16 = f["s4"][:B], f["s8"], f["s16"]
        m8 = F.adaptive_avg_pool2d(x[:, 6:7], f8.shape[-2:])
        extra8 = [m8]
        if self.coord_channels:
            h, w_ = f8.shape[-2:]
            ys = torch.linspace(0.0, 1.0, h, device=x.device, dtype=x.dtype)
            xs = torch.linspace(0.0, 1.0, w_, device=x.device, dtype=x.dtype)
            extra8 += [xs.view(1, 1, 1, w_).expand(B, 1, h, w_), ys.view(1, 1, h, 1).expand(B, 1, h, w_)]
        h8 = self.fuse8(torch.cat([self._pair(f8[:B], f8[B:], "s8"), *extra8], dim=1))
        d8 = self.down8(h8)
        m16 = F.adaptive_avg_pool2d(x[:, 6:7], f16.shape[-2:])
        d8 = F.interpolate(d8, size=f16.shape[-2:], mode="bilinear", align_corners=False) if d8.shape[-2:] != f16.shape[-2:] else d8
        h16 = self.fuse16(torch.cat([self._pair(f16[:B], f16[B:], "s16"), m16, d8], dim=1))
        h32 = self.stage32(h16)
        up = F.interpolate(h8, size=f4.shape[-2:], mode="bilinear", align_corners=False)
        mask = self.mask_out(self.mask_fuse(torch.cat([f4, up], dim=1)))
        feat = self.fc(self.pool(h32).flatten(1))
        return RefineOutput(rot6d=self.rot_head(feat), v=self.trans_head(feat), mask_logits=mask)


def build_network(preset: RefinePreset) -> nn.Module:
    """The preset's refiner network: :class:`PretrainedRefineNet` when it names a trunk, else :class:`RefineNet`."""
    return PretrainedRefineNet(preset) if preset.trunk else RefineNet(preset)


def mask_probabilities(mask_logits: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """The predicted visible mask (B, 1, H, W) as probabilities at the crop's resolution ``size_hw`` = (H, W)."""
    return torch.sigmoid(F.interpolate(mask_logits, size=tuple(size_hw), mode="bilinear", align_corners=False))


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


__all__ = ["RefineNet", "PretrainedRefineNet", "build_network", "RefineOutput", "IN_CHANNELS", "count_parameters", "mask_probabilities"]
