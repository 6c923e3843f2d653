"""Test-time refinement: render at the current pose, crop, predict the update, repeat -- batched over all
detections of one image.

    refiner = Refiner.load("ws_refiner")                    # config.json + checkpoints/last.pt
    out = refiner.refine(observation, objects=[8, 9], R=R0, t=t0, iters=4)
    out.R[-1], out.t[-1]                                    # refined poses (B, 3, 3), (B, 3) mm
    out.R[k], out.t[k]                                      # after iteration k (0 = the initial poses)
    out.times[k - 1]                                        # seconds of iteration k (render + network)

Renderer (``renderer=``): ``"pyrender"`` (OpenGL, one render per crop; the training renderer, fast on
CPU through EGL), ``"pytorch3d"`` (``DiffRenderer``, one batched call; the CUDA choice), ``"auto"``
(PyTorch3D on CUDA, pyrender on CPU: see docs/benchmarks.md for the measured speeds).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from posekit.cad.model import ObjectModel, model_index
from posekit.data.types import Observation, RefineRun
from posekit.errors import InputError
from posekit.features.edges import contour_edge_agreement
from posekit.geometry.crop import crop_images, crop_intrinsics, crop_mask
from posekit.geometry.update import apply_update
from posekit.methods.refine.network import build_network, mask_probabilities
from posekit.methods.refine.pairs import RefineObject, prepare_object, zoom_windows
from posekit.methods.refine.presets import RefinePreset
from posekit.methods.refine.train import read_config
from posekit.methods.viewbased import image_tensor
from posekit.render.crops import render_in_crops
from posekit.train.checkpoint import load_weights
from posekit.train.loop import checkpoint_path, resolve_device

RENDERERS = ("auto", "pyrender", "pytorch3d")
SCORES = (None, "mask", "edges", "features")


def _silhouette_agreement(mask_logits: torch.Tensor, rendered: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """(B,) soft IoU of the predicted visible mask (logits, any resolution) and the rendered silhouette (B, 1, H, W)."""
    p = mask_probabilities(mask_logits, size[::-1])
    inter = (p * rendered).flatten(1).sum(1)
    union = (p + rendered - p * rendered).flatten(1).sum(1)
    return (inter / union.clamp_min(1e-6)).double().cpu().numpy()


def feature_agreement(observed: torch.Tensor, rendered: torch.Tensor, masks: torch.Tensor, n: int,
                      feature: str = "s8") -> np.ndarray:
    """(B, n) masked feature similarity of n renders per instance with their observed crop, all in one crop.

    observed (B, 3, H, W); rendered (B n, 3, H, W) and masks (B n, 1, H, W), instance-major: the shared
    pretrained backbone's ``feature`` maps compared cell by cell (cosine) under the union of the instance's n
    masks (:func:`~posekit.features.similarity.union_similarity`). The templates' similarity, so it reads real
    photos.
    """
    from posekit.features.backbone import Backbone, shared_backbone
    from posekit.features.similarity import mask_weights, union_similarity

    net = shared_backbone(observed.device)
    f_obs, f = net.features(observed, feature), net.features(rendered, feature)
    w = mask_weights(masks, Backbone.stride(feature), tuple(f.shape[-2:]))
    return union_similarity(f_obs, f, w, n).double().cpu().numpy()


class Refiner:
    """A trained refiner with its objects and renderer (see the module docstring)."""

    def __init__(self, net: torch.nn.Module, preset: RefinePreset, objects: list[RefineObject],
                 device: str | torch.device = "auto", renderer: str = "auto") -> None:
        if renderer not in RENDERERS:
            raise InputError(f"--renderer must be one of {', '.join(RENDERERS)}, got {renderer!r}")
        self.device = resolve_device(str(device)) if not isinstance(device, torch.device) else device
        self.net = net.to(self.device).eval()
        self.preset, self.objects = preset, objects
        if renderer == "auto":
            renderer = "pytorch3d" if self.device.type == "cuda" else "pyrender"
        self.renderer_name = renderer
        self._renderer = None
        self._diff = None
        self._soft = None
        self.path: Path | None = None  # the workspace it was loaded from

    # ---- construction
    @classmethod
    def load(cls, workspace: str | Path, models: Sequence[ObjectModel] | None = None, device: str = "auto",
             renderer: str = "auto") -> Refiner:
        """A refiner from a workspace written by ``posekit train refine``.

        ``models``: the meshes to refine (each must be one the workspace was trained on, matched by mesh
        hash; a subset is fine); None -> all trained objects, from the CAD paths recorded in config.json.
        """
        ws = Path(workspace)
        cfg = read_config(ws)
        preset = RefinePreset.from_json(cfg["preset"])
        recs = cfg["objects"]
        if models is None:
            from posekit.cad.load import load_model

            models = []
            for r in recs:
                if not r.get("cad") or not Path(r["cad"]).is_file():
                    raise InputError(f"{ws / 'config.json'}: CAD file {r.get('cad')!r} of {r['name']} not found; pass the models")
                models.append(load_model(r["cad"], units="mm", obj_id=r.get("obj_id"), symmetries=r["models_info"]))
        trained = {r["mesh_hash"]: r for r in recs}
        ordered = []
        for m in models:  # a subset of the trained objects is fine: the network is shared across objects
            r = trained.get(m.mesh_hash)
            if r is None:
                names = ", ".join(rec["name"] for rec in recs)
                raise InputError(f"{ws / 'config.json'}: the refiner was not trained on {m.name or 'this model'} (mesh "
                                 f"hash {m.mesh_hash[:16]}...; it knows {names}); use it with the meshes it was trained on")
            if m.obj_id is None and r.get("obj_id") is not None:
                m.obj_id = int(r["obj_id"])
            ordered.append(m)
        if not ordered:
            raise InputError(f"{ws / 'config.json'}: no models given to the refiner")
        net = build_network(preset)
        load_weights(net, checkpoint_path(ws))
        refiner = cls(net, preset, [prepare_object(m, preset) for m in ordered], device=device, renderer=renderer)
        refiner.path = ws
        return refiner

    def object_index(self, key: int | str) -> int:
        """Index of an object by BOP obj_id (int), name or mesh hash."""
        return model_index([o.model for o in self.objects], key, "the refiner")

    # ---- rendering
    def _get_renderer(self):
        W, H = self.preset.crop_size
        if self.renderer_name == "pyrender":
            if self._renderer is None:
                from posekit.render.gl import OffscreenRenderer

                self._renderer = OffscreenRenderer(W, H)
            return self._renderer
        if self._diff is None:
            from posekit.render.diff import DiffRenderer

            self._diff = DiffRenderer([o.render_model for o in self.objects], image_size=(W, H), max_faces=None,
                                      device=self.device, hard=True)
        return self._diff

    def _get_soft_renderer(self):
        """A soft-silhouette DiffRenderer at the crop size (for the polish; the loop's renderer may be hard)."""
        if self._soft is None:
            from posekit.render.diff import DiffRenderer

            self._soft = DiffRenderer([o.render_model for o in self.objects], image_size=tuple(self.preset.crop_size),
                                      max_faces=None, device=self.device, hard=False)
        return self._soft

    def polish(self, run: RefineRun, objects: Sequence[int | str], steps: int, lr: float = 0.01,
               mask: np.ndarray | None = None, observation: Observation | None = None):
        """``steps`` silhouette-gradient steps on ``run.final`` towards the object's visible mask
        (``observation`` is not needed: the target is in the run).

        The target is, by default, the last iteration's mask prediction in that iteration's crop
        (``run.mask_probs``, ``run.K_crops``); ``mask`` (H, W) in [0, 1], a mask of the whole image that
        the user gives (e.g. from a segmenter), replaces it, cut into the same crops. Returns a
        :class:`~posekit.methods.polish.PolishResult`.
        """
        from posekit.methods.polish import polish

        if run.mask_probs is None:
            raise ValueError("polish needs a refine run of at least one iteration")
        idx = np.array([self.object_index(k) for k in objects], dtype=np.int64)
        R0, t0 = run.final
        target = run.mask_probs
        if mask is not None:
            target = crop_mask(mask, run.windows, target.shape[-2:])
        return polish(self._get_soft_renderer(), idx, R0, t0, run.K_crops, target, steps=steps, lr=lr)

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    # ---- refinement
    @torch.no_grad()
    def refine(self, observation: Observation, objects: Sequence[int | str], R, t, iters: int = 4,
               score: str | None = None) -> RefineRun:
        """Refine B poses of objects in one image; see :class:`RefineRun`.

        objects: B keys (obj_id / name / hash, see :meth:`object_index`); R (B, 3, 3), t (B, 3) mm.
        score: rate every iterate (the initial pose included) in its own zoom crop, so that ``run.final``
        keeps the best iterate rather than the last -- a guard against updates that drift on real images
        (MegaPose scores its hypotheses likewise). ``"mask"``: soft IoU of the rendered silhouette with
        the visible mask the network predicts (one more network pass for the last pose); ``"edges"``:
        how well the silhouette's contour lies on image edges of the same orientation (no learning,
        so no sim-to-real gap; one more render for the last pose; :func:`contour_edge_agreement`);
        ``"features"``: every iterate rendered again in the start pose's crop and compared with it through the
        pretrained backbone (:func:`feature_agreement`; iters + 1 more renders). None: no scoring.
        """
        if score not in SCORES:
            raise InputError(f"--score must be one of {', '.join(str(s) for s in SCORES)}, got {score!r}")
        run = RefineRun.start(len(objects), R, t, iters)
        R, t = run.R[0].copy(), run.t[0].copy()
        B = len(R)
        idx = np.array([self.object_index(k) for k in objects], dtype=np.int64)
        if B == 0:
            return run
        size = tuple(self.preset.crop_size)
        img = image_tensor(observation.image).to(self.device)
        K = np.broadcast_to(observation.camera.K, (B, 3, 3))
        renderer = self._get_renderer()
        per_pass = score in ("mask", "edges")  # scored in each pass's own crop (one more pass for the last pose)
        if per_pass:
            run.scores = np.zeros((iters + 1, B))
        for k in range(1, iters + 2 if per_pass else iters + 1):
            t0 = time.perf_counter()
            win = zoom_windows(self.objects, idx, R, t, K, self.preset)
            Kc = crop_intrinsics(np.asarray(K, np.float64), win, size)
            obs = crop_images(img.expand(B, -1, -1, -1), torch.as_tensor(win, dtype=torch.float32, device=self.device), size)
            rgb, mask = render_in_crops(renderer, [o.render_model for o in self.objects], idx, R, t, Kc, size)
            t1 = time.perf_counter()
            if k == 1 and score == "features":  # the start pose's crop and render: where every iterate is scored
                start = (obs, Kc, rgb, mask)
            last = k > iters  # the extra pass only scores the last pose
            if score == "edges":
                run.scores[k - 1] = contour_edge_agreement(obs, mask.to(self.device))
                if last:  # the edge score needs no network pass
                    break
            out = self.net(torch.cat([obs, rgb.to(self.device), mask.to(self.device)], dim=1))
            if score == "mask":
                run.scores[k - 1] = _silhouette_agreement(out.mask_logits, mask.to(self.device), size)
            if last:
                break
            dR = out.dR.double().cpu().numpy()
            v = out.v.double().cpu().numpy()
            R, t = apply_update(R, t, dR, v, Kc, np.full(B, float(size[0])))
            t2 = time.perf_counter()
            run.R[k], run.t[k] = R, t
            run.times.append(t2 - t0)
            run.render_times.append(t1 - t0)
            run.network_times.append(t2 - t1)
            if k == iters:
                run.mask_probs = mask_probabilities(out.mask_logits, size[::-1])[:, 0].cpu().numpy()
                run.windows, run.K_crops = win, Kc
        if score == "features":
            run.scores = self._feature_scores(start, idx, run)
        return run

    def _feature_scores(self, start: tuple, idx: np.ndarray, run: RefineRun) -> np.ndarray:
        """(iters + 1, B) :func:`feature_agreement` of every iterate, all in the start pose's zoom crop.

        ``start``: the first pass's (observed crop, crop intrinsics, render, mask); the start pose's render is
        reused, the later iterates are rendered in that crop."""
        obs, Kc, rgb0, mask0 = start
        n, B = run.R.shape[:2]
        size = tuple(self.preset.crop_size)
        R = np.swapaxes(run.R[1:], 0, 1).reshape(-1, 3, 3)  # instance-major: (B (n - 1), 3, 3)
        t = np.swapaxes(run.t[1:], 0, 1).reshape(-1, 3)
        rgb, mask = render_in_crops(self._get_renderer(), [o.render_model for o in self.objects], np.repeat(idx, n - 1),
                                    R, t, np.repeat(Kc, n - 1, axis=0), size)
        both = [torch.cat([a[:, None], b.view(B, n - 1, *b.shape[1:])], dim=1).flatten(0, 1)
                for a, b in ((rgb0, rgb), (mask0, mask))]
        return feature_agreement(obs, both[0].to(self.device), both[1].to(self.device), n).T


__all__ = ["Refiner", "RefineRun", "RENDERERS", "SCORES", "feature_agreement"]
