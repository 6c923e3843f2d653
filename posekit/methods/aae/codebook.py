"""The AAE codebook and the trained workspace: codes of clean views over the view sphere, and cosine lookup.

A codebook entry is a rotation R (object-to-camera) from ``view_sphere_rotations(V, I)`` (view
point x in-plane angle, view-major), the unit-length code of its clean crop, and what the
translation estimate needs from its render: the tight box's larger side (``box_size``, pixels of
the codebook camera K at ``distance``) and the offset from the tight-box centre to where the
object's origin projects (``box_offset``, same pixels). Of an observed box of larger side s_obs
in a camera of focal f_obs, the paper's depth is ``distance * (box_size / s_obs) * (f_obs / f_K)``.

Renders: only the V view points are rendered; the I in-plane angles are exact image rotations of
a centred render about the principal point (fx = fy, principal point at the image centre), cut in
the same resampling as the crop (:func:`posekit.geometry.boxcrop.turned_crops`).
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel
from posekit.errors import InputError
from posekit.geometry.boxcrop import crop_boxes
from posekit.methods.aae.network import AugmentedAutoencoder
from posekit.methods.aae.pose import estimate_poses
from posekit.methods.aae.presets import AaePreset
from posekit.methods.viewbased import center_hint

CODEBOOK_NAME = "codebook.npz"


@dataclass
class Codebook:
    """Codes (N, L) unit-length float32, rotations (N, 3, 3), box_size (N,), box_offset (N, 2), and the render set-up."""

    codes: torch.Tensor
    rotations: np.ndarray
    box_size: np.ndarray
    box_offset: np.ndarray
    distance: float
    K: np.ndarray
    render_size: int
    image_size: int
    crop_pad: float
    mesh_hash: str
    n_views: int = 0
    n_inplane: int = 0
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.codes.shape[0])

    def to(self, device: str | torch.device) -> Codebook:
        self.codes = self.codes.to(device)
        return self

    def lookup(self, codes: torch.Tensor, top_k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-k entries by cosine similarity for each query: (indices (B, k) long, similarities (B, k)).

        One (B, L) x (L, N) matrix product; queries are normalised here, entries are stored normalised.
        """
        q = torch.as_tensor(codes).to(self.codes.device, self.codes.dtype)
        if q.ndim == 1:
            q = q[None]
        q = torch.nn.functional.normalize(q, dim=1)
        sims = q @ self.codes.T
        vals, idx = sims.topk(min(int(top_k), sims.shape[1]), dim=1)
        return idx, vals

    def save(self, path: str | Path, half: bool = False) -> Path:
        """Write an .npz atomically; ``half`` stores the codes as float16 (half the size, same ranking to ~1e-3)."""
        path = Path(path)
        tmp = path.with_name(path.stem + ".tmp.npz")
        codes = self.codes.detach().cpu().numpy()
        np.savez(tmp, codes=codes.astype(np.float16 if half else np.float32), rotations=self.rotations.astype(np.float32),
                 box_size=self.box_size.astype(np.float32), box_offset=self.box_offset.astype(np.float32),
                 distance=self.distance, K=self.K, render_size=self.render_size, image_size=self.image_size,
                 crop_pad=self.crop_pad, mesh_hash=self.mesh_hash, n_views=self.n_views, n_inplane=self.n_inplane,
                 meta=json.dumps(self.meta))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> Codebook:
        path = Path(path)
        try:
            with np.load(path) as z:
                return cls(
                    codes=torch.from_numpy(z["codes"].astype(np.float32)).to(device),
                    rotations=z["rotations"].astype(np.float64), box_size=z["box_size"].astype(np.float64),
                    box_offset=z["box_offset"].astype(np.float64), distance=float(z["distance"]), K=z["K"],
                    render_size=int(z["render_size"]), image_size=int(z["image_size"]),
                    crop_pad=float(z["crop_pad"]), mesh_hash=str(z["mesh_hash"]), n_views=int(z["n_views"]),
                    n_inplane=int(z["n_inplane"]), meta=json.loads(str(z["meta"])),
                )
        except FileNotFoundError:
            raise InputError(f"{path}: no codebook there (run `posekit train aae-codebook WORKSPACE`)") from None
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
            raise InputError(f"{path}: unreadable codebook ({exc})") from None


@torch.no_grad()
def encode_batches(net: AugmentedAutoencoder, crops: torch.Tensor, device: torch.device, batch: int = 512) -> torch.Tensor:
    """Unit codes (N, L) of crops (N, 3, S, S), encoded ``batch`` at a time on ``device``."""
    net.eval()
    out = [net.encode(crops[i : i + batch].to(device)) for i in range(0, crops.shape[0], batch)]
    return torch.cat(out) if out else torch.zeros(0, net.encoder.fc.out_features, device=device)


@torch.no_grad()
def build_codebook(net: AugmentedAutoencoder, model: ObjectModel, preset: AaePreset, device: str | torch.device = "cpu",
                   n_views: int | None = None, n_inplane: int | None = None, progress: bool = True,
                   chunk: int = 64) -> Codebook:
    """Encode clean views of ``model`` at ``view_sphere_rotations(n_views, n_inplane)`` (preset sizes by default)."""
    from posekit.render.centred import render_camera, render_crops
    from posekit.render.views import fibonacci_sphere, look_at_rotation

    V = int(n_views or preset.codebook_views)
    Ip = int(n_inplane or preset.codebook_inplane)
    device = torch.device(device)
    net = net.to(device).eval()
    R_view = look_at_rotation(fibonacci_sphere(V))
    angles = 2.0 * np.pi * np.arange(Ip) / Ip
    codes, sizes, offsets = [], [], []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=V * Ip, desc="codebook", unit="code", file=sys.stderr, dynamic_ncols=True)
    for start in range(0, V, chunk):
        r = render_crops(model, R_view[start : start + chunk], preset.crop_spec, angles=angles, progress=False,
                         with_normals=False)
        codes.append(encode_batches(net, r["rgb"], device))
        sizes.append(r["box_size"])
        offsets.append(r["box_offset"])
        if bar is not None:
            bar.update(r["rgb"].shape[0])
    if bar is not None:
        bar.close()
    from posekit.render.views import inplane_rotation

    rotations = np.einsum("kij,vjl->vkil", inplane_rotation(angles), R_view).reshape(-1, 3, 3)
    distance, K = render_camera(model, preset.crop_spec)
    return Codebook(codes=torch.cat(codes), rotations=rotations, box_size=torch.cat(sizes).cpu().numpy(),
                    box_offset=torch.cat(offsets).cpu().numpy(), distance=distance, K=K,
                    render_size=preset.render_size, image_size=preset.image_size, crop_pad=preset.crop_pad,
                    mesh_hash=model.mesh_hash, n_views=V, n_inplane=Ip)


# --------------------------------------------------------------------------- the workspace


@dataclass
class AaeWorkspace:
    """A trained AAE: its config, network (eval mode, on ``device``), codebook, and the crop convention."""

    method_name = "aae"  # the coarse method, as the estimate JSON records it

    path: Path
    config: dict
    preset: AaePreset
    net: AugmentedAutoencoder
    codebook: Codebook | None
    device: torch.device
    step: int = 0

    @property
    def image_size(self) -> int:
        return self.preset.image_size

    @property
    def mesh_hash(self) -> str:
        return self.config["mesh_hash"]

    def crop(self, images: torch.Tensor, boxes_xywh) -> tuple[torch.Tensor, np.ndarray]:
        """AAE crops (B, 3, S, S) of images (B, 3, H, W) in [0, 1] at BOP boxes (B, 4), and their windows (B, 4)."""
        return crop_boxes(images.to(self.device), boxes_xywh, self.image_size, self.preset.crop_pad)

    @torch.no_grad()
    def encode(self, crops: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) crops in [0, 1] -> (B, L) unit codes."""
        if crops.shape[-1] != self.image_size or crops.shape[-2] != self.image_size:
            raise InputError(f"crops must be {self.image_size}x{self.image_size} for workspace {self.path}, "
                             f"got {tuple(crops.shape[-2:])}")
        return self.net.encode(crops.to(self.device, torch.float32))

    def lookup(self, codes: torch.Tensor, top_k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Codebook entries nearest to ``codes`` by cosine similarity: (indices (B, k), similarities (B, k))."""
        if self.codebook is None:
            raise InputError(f"workspace {self.path} has no codebook (run `posekit train aae-codebook {self.path}`)")
        return self.codebook.lookup(codes, top_k)

    def estimate(self, image: np.ndarray, camera, boxes_xywh, obj_id: int, top_k: int = 1,
                 correct_perspective: bool = True):
        """Top-k pose hypotheses per box (:func:`posekit.methods.aae.pose.estimate_poses`)."""
        return estimate_poses(self, image, camera, boxes_xywh, obj_id, top_k, correct_perspective)

    def check_mesh(self, model: ObjectModel) -> None:
        """InputError unless ``model`` is the mesh this workspace was trained for."""
        if model.mesh_hash != self.mesh_hash:
            name = model.source or model.name
            raise InputError(f"workspace {self.path} was trained for mesh hash {self.mesh_hash} "
                             f"but {name} has {model.mesh_hash}{center_hint(self.config, model)}")


def load_network(path: Path, preset: AaePreset, device: torch.device) -> tuple[AugmentedAutoencoder, int]:
    """The workspace's network from checkpoints/last.pt (eval mode) and the step it was saved at."""
    from posekit.train.checkpoint import load_weights
    from posekit.train.loop import checkpoint_path

    net = AugmentedAutoencoder.from_preset(preset)
    step = load_weights(net, checkpoint_path(path))
    return net.to(device).eval(), step


def load_workspace(path: str | Path, device: str | torch.device = "cpu", model: ObjectModel | None = None,
                   require_codebook: bool = True) -> AaeWorkspace:
    """Open a workspace written by ``posekit train aae``; with ``model`` given, check its mesh hash first."""
    from posekit.data.store import read_workspace_config
    from posekit.train.loop import resolve_device

    path = Path(path)
    config = read_workspace_config(path, "aae", "posekit train aae", "AAE")
    try:
        preset = AaePreset.from_dict(config["preset"])
    except (KeyError, TypeError) as exc:
        raise InputError(f"{path / 'config.json'}: unreadable workspace config ({exc})") from None
    dev = resolve_device(str(device))
    net, step = load_network(path, preset, dev)
    book = None
    if (path / CODEBOOK_NAME).is_file() or require_codebook:
        book = Codebook.load(path / CODEBOOK_NAME, dev)
        if book.mesh_hash != config.get("mesh_hash"):
            raise InputError(f"{path / CODEBOOK_NAME}: codebook was made for mesh hash {book.mesh_hash} but the "
                             f"workspace is for {config.get('mesh_hash')}; run `posekit train aae-codebook {path}`")
    ws = AaeWorkspace(path=path, config=config, preset=preset, net=net, codebook=book, device=dev, step=step)
    if model is not None:
        ws.check_mesh(model)
    return ws


def rebuild_codebook(path: str | Path, model: ObjectModel, device: str | torch.device = "cpu",
                     n_views: int | None = None, n_inplane: int | None = None, progress: bool = True) -> Path:
    """Make WORKSPACE/codebook.npz again from the last checkpoint (``posekit train aae-codebook``)."""
    ws = load_workspace(path, device, model=model, require_codebook=False)
    if ws.preset.threads and ws.device.type == "cpu" and not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(ws.preset.threads)
    book = build_codebook(ws.net, model, ws.preset, ws.device, n_views, n_inplane, progress)
    return book.save(ws.path / CODEBOOK_NAME)
