"""The synthetic BOP dataset generator: job spec, resumable writing, worker processes, shards and merging.

Determinism is the backbone. Image ``index`` of a job is a pure function of (job seed, index): its scene is drawn
from ``image_rng(seed, index)`` and it is written as scene ``index // 1000``, image ``index % 1000`` of the
``train_synt`` split. Hence

- resuming: what is done is read from disk (a frame counts once it is in scene_camera.json and all its image files
  exist); the rest is rendered again, giving the bytes an uninterrupted run would have written;
- workers: the pending indices are spread over processes; only the main process writes the JSON files;
- shards: shard i/n renders the indices with ``index % n == i`` into its own folder; ``merge_shards`` copies the
  images and unions the per-scene JSON, which is then byte-identical to the unsharded run's.

The job spec (model hashes, count, seed, size, camera, randomisation) is saved as ``posekit_render_job.json``; a
different spec aimed at the same folder is refused, the same spec resumes, a finished job does nothing.
Every file is written atomically (temp file + os.replace); the JSON files are rewritten after every batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from posekit.cad.model import ObjectModel
from posekit.data.bop import (
    FrameCamera,
    GtInfo,
    GtInstance,
    depth_to_uint16,
    read_scene,
    write_camera_json,
    write_models_info,
    write_scene_camera,
    write_scene_gt,
    write_scene_gt_info,
)
from posekit.data.jsonio import read_json, save_image_atomic, write_text_atomic
from posekit.errors import InputError
from posekit.geometry.camera import Camera
from posekit.render.backgrounds import ImageBackgrounds, procedural_background
from posekit.render.scenes import RandomizationConfig, SceneSample, image_rng, sample_scene

JOB_FILE = "posekit_render_job.json"
SPLIT = "train_synt"
IMAGES_PER_SCENE = 1000
JOB_VERSION = 2  # 2: targets record mesh_hash and render_hash (was "hash")


def model_content_hash(model: ObjectModel) -> str:
    """SHA-256 of the geometry and colours actually rendered (vertices mm, faces, vertex colours): the job spec's
    ``render_hash``, beside the part's ``mesh_hash`` (the identity `posekit inspect` prints and workspaces record,
    which leaves colours out)."""
    h = hashlib.sha256()
    for a in (model.vertices, model.faces, model.vertex_colors):
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(str((a.dtype.str, a.shape)).encode())
            h.update(a.tobytes())
    return h.hexdigest()


def index_to_ids(index: int) -> tuple[int, int]:
    """Global image index -> (scene_id, im_id)."""
    return divmod(int(index), IMAGES_PER_SCENE)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'i/n' (0 <= i < n) -> (i, n); None stays None."""
    if text is None:
        return None
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise InputError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise InputError(f"--shard i/n needs 0 <= i < n, got {text!r}")
    return (i, n)


@dataclass
class RenderJob:
    """A dataset to render: target models (obj ids 1..n in order), distractors, camera, count, seed, randomisation.

    ``backgrounds`` holds the user's background images when ``config.background == "images"``.
    ``shard`` = (i, n) restricts the job to indices with ``index % n == i``.
    """

    targets: list[ObjectModel]
    camera: Camera
    count: int
    seed: int = 0
    config: RandomizationConfig = field(default_factory=RandomizationConfig)
    distractors: list[ObjectModel] = field(default_factory=list)
    backgrounds: ImageBackgrounds | None = None
    shard: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if not self.targets:
            raise InputError("posekit render needs at least one --cad model")
        if self.count < 0:
            raise InputError(f"--count must be >= 0, got {self.count}")
        if self.config.background == "images" and self.backgrounds is None:
            raise InputError("background 'images' needs a --backgrounds folder")

    @property
    def max_depth(self) -> float:
        """The farthest a rendered surface can be (mm): sets the far plane and the depth PNG scale."""
        c = self.config
        diam = max(m.diameter for m in self.targets + self.distractors)
        if c.mode == "clean":
            d = c.clean_distance if c.clean_distance is not None else 3.0 * max(m.diameter for m in self.targets)
        elif c.distance is not None:
            d = c.distance[1]
        else:
            f = 0.5 * (self.camera.K[0, 0] + self.camera.K[1, 1])
            d = f * diam / (max(c.apparent_size[0], 1e-3) * min(self.camera.width, self.camera.height))
        return float(d + diam)

    @property
    def depth_scale(self) -> float:
        """BOP depth_scale (mm per uint16 step): 0.1 mm where it fits, coarser for large scenes."""
        need = self.max_depth * 1.05 / 65535.0
        return 0.1 if need <= 0.1 else float(np.ceil(need * 10.0) / 10.0)

    def indices(self) -> range:
        """The global image indices this job (or shard) renders."""
        if self.shard is None:
            return range(self.count)
        i, n = self.shard
        return range(i, self.count, n)

    def spec(self) -> dict:
        """The JSON-able identity of the job (what a resume must match), shard included."""
        K = self.camera.K
        return {
            "version": JOB_VERSION,
            "count": int(self.count),
            "seed": int(self.seed),
            "size": [self.camera.width, self.camera.height],
            "cam_K": [float(v) for v in K.reshape(-1)],
            # mesh_hash: the part's identity (what `posekit inspect` prints, what workspaces record);
            # render_hash: what is drawn (geometry and vertex colours), which a resume must match
            "targets": [{"obj_id": i + 1, "name": m.name, "mesh_hash": m.mesh_hash, "render_hash": model_content_hash(m)}
                        for i, m in enumerate(self.targets)],
            "distractors": [{"name": m.name, "mesh_hash": m.mesh_hash, "render_hash": model_content_hash(m)}
                            for m in self.distractors],
            "backgrounds": None if self.backgrounds is None else self.backgrounds.content_hash(),
            "randomization": self.config.to_json(),
            "images_per_scene": IMAGES_PER_SCENE,
            "split": SPLIT,
            "depth_scale": self.depth_scale,
            "shard": None if self.shard is None else list(self.shard),
        }


# --------------------------------------------------------------------------- job folder


def _spec_text(spec: dict) -> str:
    return json.dumps(spec, indent=1, sort_keys=True) + "\n"


def _spec_diff(a: dict, b: dict) -> list[str]:
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def check_writable(out: Path) -> None:
    """Raise InputError naming ``out`` unless it is (or can be created as) a writable folder; creates nothing."""
    out = Path(out)
    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{out}: --out is not a writable folder ({probe} is not a folder)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{out}: --out is not a writable folder (no write permission on {probe})")


def prepare_output(job: RenderJob, out: str | Path) -> Path:
    """Claim ``out`` for ``job``: save the spec (or check it matches), write models/, camera.json; clean temp files.

    Raises InputError if ``out`` holds a different job.
    """
    out = Path(out)
    check_writable(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"{out}: cannot create the --out folder ({exc.strerror or exc})") from None
    spec = job.spec()
    job_path = out / JOB_FILE
    if job_path.is_file():
        old = read_json(job_path)
        if old != json.loads(_spec_text(spec)):
            keys = ", ".join(_spec_diff(old, spec)) if isinstance(old, dict) else "everything"
            raise InputError(
                f"{job_path}: {out} holds a different render job (differs in: {keys}); "
                "use another --out, or repeat the original command to resume it"
            )
    else:
        write_text_atomic(job_path, _spec_text(spec))
    write_models(out, job.targets)
    write_camera_json(out, job.camera, job.depth_scale)
    _remove_temp_files(out / SPLIT)
    return out


def write_models(out: Path, models: Sequence[ObjectModel]) -> None:
    """models/obj_{id:06d}.ply (mm, with vertex colours) and models/models_info.json; obj ids 1..n."""
    mdir = Path(out) / "models"
    mdir.mkdir(parents=True, exist_ok=True)
    infos = {}
    for i, m in enumerate(models):
        data = m.to_trimesh().export(file_type="ply")
        path = mdir / f"obj_{i + 1:06d}.ply"
        if not path.is_file() or path.read_bytes() != data:
            _write_bytes_atomic(path, data)
        infos[i + 1] = m.models_info_entry()
    write_models_info(mdir, infos)


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _remove_temp_files(root: Path) -> None:
    """Delete temp files a killed run left behind (jsonio writes ``.<name>.<random>.tmp``)."""
    if not root.is_dir():
        return
    for p in root.rglob(".*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass


def frame_files(scene_dir: Path, im_id: int, n_gt: int) -> list[Path]:
    """Every image file of one frame."""
    files = [scene_dir / "rgb" / f"{im_id:06d}.png", scene_dir / "depth" / f"{im_id:06d}.png"]
    for g in range(n_gt):
        files.append(scene_dir / "mask" / f"{im_id:06d}_{g:06d}.png")
        files.append(scene_dir / "mask_visib" / f"{im_id:06d}_{g:06d}.png")
    return files


@dataclass
class SceneState:
    """The JSON content of one scene held by the main process (complete frames only)."""

    scene_dir: Path
    gt: dict[int, list[GtInstance]] = field(default_factory=dict)
    cameras: dict[int, FrameCamera] = field(default_factory=dict)
    dirty: bool = False

    @classmethod
    def load(cls, scene_dir: Path) -> SceneState:
        """The complete frames on disk: listed in scene_camera.json, with gt + gt_info entries and all files."""
        state = cls(scene_dir)
        if not (scene_dir / "scene_camera.json").is_file():
            return state
        scene = read_scene(scene_dir, SPLIT)
        for im_id, cam in scene.cameras.items():
            gts = scene.gt.get(im_id)
            if gts is None or any(g.info is None for g in gts):
                state.dirty = True
                continue
            if not all(p.is_file() for p in frame_files(scene_dir, im_id, len(gts))):
                state.dirty = True  # listed but a file is missing: render it again
                continue
            state.gt[im_id], state.cameras[im_id] = gts, cam
        return state

    def add(self, record: FrameRecord) -> None:
        self.gt[record.im_id] = record.gts
        self.cameras[record.im_id] = record.camera
        self.dirty = True

    def flush(self) -> None:
        """Rewrite the three JSON files atomically; scene_camera.json (the completion marker) last."""
        if not self.dirty:
            return
        self.scene_dir.mkdir(parents=True, exist_ok=True)
        write_scene_gt_info(self.scene_dir / "scene_gt_info.json", self.gt)
        write_scene_gt(self.scene_dir / "scene_gt.json", self.gt)
        write_scene_camera(self.scene_dir / "scene_camera.json", self.cameras)
        self.dirty = False


def completed_indices(out: Path) -> set[int]:
    """Global indices of the frames complete on disk."""
    done: set[int] = set()
    split_dir = Path(out) / SPLIT
    if not split_dir.is_dir():
        return done
    for s in sorted(split_dir.iterdir()):
        if s.is_dir() and s.name.isdigit():
            sid = int(s.name)
            done.update(sid * IMAGES_PER_SCENE + im for im in SceneState.load(s).cameras)
    return done


# --------------------------------------------------------------------------- one frame


@dataclass
class FrameRecord:
    """What a worker sends back after writing a frame's images: its JSON entries."""

    index: int
    scene_id: int
    im_id: int
    gts: list[GtInstance]
    camera: FrameCamera


def _bbox_xywh(mask: np.ndarray, dx: int = 0, dy: int = 0) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return (-1, -1, -1, -1)
    x0, y0 = int(xs.min()), int(ys.min())
    return (x0 + dx, y0 + dy, int(xs.max()) - x0 + 1, int(ys.max()) - y0 + 1)


class FrameRenderer:
    """Renders and writes frames of one job (one per process; holds the GL context)."""

    def __init__(self, job: RenderJob, out: str | Path):
        from posekit.render.gl import OffscreenRenderer

        self.job = job
        self.out = Path(out)
        for m in job.targets + job.distractors:  # once per process, not once per jittered copy
            if m.vertex_normals is None or len(m.vertex_normals) != len(m.vertices):
                m.vertex_normals = np.asarray(m.to_trimesh().vertex_normals, dtype=np.float32)
        cam = job.camera
        self.renderer = OffscreenRenderer(cam.width, cam.height, zfar=max(10000.0, 2.0 * job.max_depth))
        self.depth_scale = job.depth_scale

    def close(self) -> None:
        self.renderer.close()

    def _render_objects(self, sample: SceneSample) -> list:
        from posekit.render.types import RenderObject

        objs = []
        for o in sample.objects:
            if o.role == "target":
                model = self.job.targets[o.index]
            elif o.role == "distractor":
                model = self.job.distractors[o.index]
            else:
                model = o.primitive.model()
            objs.append(RenderObject(model=model, R=o.R, t=o.t, color=o.color, metallic=o.metallic,
                                     roughness=o.roughness))
        return objs

    def _full_silhouette(self, obj, visib: np.ndarray, alone: bool) -> tuple[np.ndarray, int, tuple]:
        """(full mask in the image, px_count_all, bbox_obj) of one target given its visible mask.

        The object is rendered alone through a window of the camera enlarged to its whole projected bounding box,
        at 1:1 scale, so pixels outside the image still count in px_count_all and bbox_obj (as in BOP).
        """
        cam = self.job.camera
        W, H = cam.width, cam.height
        corners = obj.model.bbox_corners @ obj.R.T + obj.t
        if np.all(corners[:, 2] > 1.0):
            uv = corners[:, :2] / corners[:, 2:3] * np.array([cam.K[0, 0], cam.K[1, 1]]) + cam.K[:2, 2]
            x0 = int(np.clip(np.floor(uv[:, 0].min()) - 1, -W, 0))
            y0 = int(np.clip(np.floor(uv[:, 1].min()) - 1, -H, 0))
            x1 = int(np.clip(np.ceil(uv[:, 0].max()) + 1, W - 1, 2 * W - 1))
            y1 = int(np.clip(np.ceil(uv[:, 1].max()) + 1, H - 1, 2 * H - 1))
        else:  # reaches behind the camera: keep the frame
            x0, y0, x1, y1 = 0, 0, W - 1, H - 1
        on_border = visib[0].any() or visib[-1].any() or visib[:, 0].any() or visib[:, -1].any()
        if alone and ((x0, y0, x1, y1) == (0, 0, W - 1, H - 1) or not on_border):
            full = visib.copy()  # nothing else in the image and nothing out of frame
            return full, int(full.sum()), _bbox_xywh(full)
        K = cam.K.copy()
        K[0, 2] -= x0
        K[1, 2] -= y0
        win = Camera(K, x1 - x0 + 1, y1 - y0 + 1)
        res = self.renderer.render(win, [obj], lights=[], ambient=1.0, with_masks=False)
        full_win = res.labels == 1
        full = full_win[-y0:-y0 + H, -x0:-x0 + W]
        return full, int(full_win.sum()), _bbox_xywh(full_win, x0, y0)

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], list[np.ndarray], SceneSample]:
        """(rgb, depth mm, full masks, visible masks, sample) of image ``index`` (nothing written)."""
        job = self.job
        cam = job.camera
        sample = sample_scene(job.config, job.targets, job.distractors, cam, image_rng(job.seed, index), index)
        objs = self._render_objects(sample)
        res = self.renderer.render(cam, objs, lights=[L.to_light() for L in sample.lights], ambient=sample.ambient,
                                   bg_color=(0.0, 0.0, 0.0), with_masks=False)
        alone = len(objs) == 1
        masks, visib, infos = [], [], []
        for k, (o, ro) in enumerate(zip(sample.objects, objs, strict=True)):
            if o.role != "target":
                continue
            vis = res.labels == k + 1
            full, n_all, bbox_obj = self._full_silhouette(ro, vis, alone)
            vis &= full  # a pixel is visible only where the object's own silhouette is
            masks.append(full)
            visib.append(vis)
            infos.append((n_all, bbox_obj))
        rgb = self._jitter_colors(res.rgb, res.labels, sample)
        rgb = self._finish_rgb(rgb, res.labels > 0, sample)
        sample.extra["infos"] = infos
        return rgb, res.depth, masks, visib, sample

    @staticmethod
    def _jitter_colors(rgb: np.ndarray, labels: np.ndarray, sample: SceneSample) -> np.ndarray:
        """Colour jitter of vertex-coloured targets: scale each instance's pixels per channel.

        Diffuse shading is linear in the albedo, so this approximates jittering the vertex colours (up to the output
        gamma: it is a jitter either way) without uploading a
        recoloured copy of the mesh for every image.
        """
        out = rgb
        for k, o in enumerate(sample.objects):
            if o.color_scale is None:
                continue
            m = labels == k + 1
            if m.any():
                if out is rgb:
                    out = rgb.copy()
                px = out[m].astype(np.float32) * np.asarray(o.color_scale, np.float32)
                out[m] = np.clip(np.rint(px), 0, 255).astype(np.uint8)
        return out

    def _finish_rgb(self, rgb: np.ndarray, fg: np.ndarray, sample: SceneSample) -> np.ndarray:
        """Composite the background behind the objects, then blur and add sensor noise."""
        from PIL import Image, ImageFilter

        cam = self.job.camera
        rng = np.random.Generator(np.random.PCG64(sample.bg_seed))
        if sample.background == "none":
            out = rgb
        else:
            if sample.background == "images":
                bg = self.job.backgrounds.sample(rng, cam.width, cam.height)
            else:
                bg = procedural_background(rng, cam.width, cam.height)
            out = np.where(fg[..., None], rgb, bg)
        if sample.blur_radius > 0:
            out = np.asarray(Image.fromarray(out).filter(ImageFilter.GaussianBlur(sample.blur_radius)))
        if sample.noise_std > 0:
            noisy = out.astype(np.float32) + rng.normal(0.0, sample.noise_std, size=out.shape).astype(np.float32)
            out = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out, dtype=np.uint8)

    def write(self, index: int) -> FrameRecord:
        """Render image ``index`` and write its PNGs atomically; return its JSON entries."""
        rgb, depth, masks, visib, sample = self.render(index)
        scene_id, im_id = index_to_ids(index)
        d = self.out / SPLIT / f"{scene_id:06d}"
        gts = []
        for g, (o, full, vis, (n_all, bbox_obj)) in enumerate(
                zip(sample.targets, masks, visib, sample.extra["infos"], strict=True)):
            save_image_atomic(d / "mask" / f"{im_id:06d}_{g:06d}.png", full)
            save_image_atomic(d / "mask_visib" / f"{im_id:06d}_{g:06d}.png", vis)
            n_vis = int(vis.sum())
            info = GtInfo(bbox_obj=bbox_obj, bbox_visib=_bbox_xywh(vis), px_count_all=int(n_all),
                          px_count_valid=int(full.sum()), px_count_visib=n_vis,
                          visib_fract=float(n_vis / n_all) if n_all else 0.0)
            gts.append(GtInstance(obj_id=o.index + 1, R=o.R, t=o.t, info=info))
        save_image_atomic(d / "depth" / f"{im_id:06d}.png", depth_to_uint16(depth, self.depth_scale, f"image {index}"))
        save_image_atomic(d / "rgb" / f"{im_id:06d}.png", rgb)
        return FrameRecord(index, scene_id, im_id, gts, FrameCamera(K=self.job.camera.K, depth_scale=self.depth_scale))


# --------------------------------------------------------------------------- workers

_WORKER: FrameRenderer | None = None


def _init_worker(job: RenderJob, out: str) -> None:
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops the pool
    _WORKER = FrameRenderer(job, out)


def _work(index: int) -> FrameRecord:
    assert _WORKER is not None
    return _WORKER.write(index)


@dataclass
class RenderSummary:
    """What a run did: images rendered now, already complete before, total of the job (or shard), seconds."""

    out: Path
    rendered: int
    skipped: int
    total: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.rendered / self.seconds if self.seconds > 0 else 0.0


def run_job(job: RenderJob, out: str | Path, workers: int = 1, flush_every: int = 50, flush_seconds: float = 5.0,
            progress: bool = True, on_frame: Callable[[FrameRecord], None] | None = None) -> RenderSummary:
    """Render ``job`` into ``out`` (resuming whatever is complete there), with ``workers`` processes.

    The JSON files of the touched scenes are rewritten every ``flush_every`` frames or ``flush_seconds``, at the end
    and on interruption (KeyboardInterrupt is re-raised after the flush). ``on_frame`` is called in the main process
    after each frame (tests use it to interrupt a run).
    """
    if workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    out = prepare_output(job, out)
    done = completed_indices(out)
    todo = [i for i in job.indices() if i not in done]
    total = len(job.indices())
    t0 = time.perf_counter()
    states: dict[int, SceneState] = {}

    def state(scene_id: int) -> SceneState:
        if scene_id not in states:
            states[scene_id] = SceneState.load(out / SPLIT / f"{scene_id:06d}")
        return states[scene_id]

    def flush_all() -> None:
        for s in states.values():
            s.flush()

    # Drop stale entries (frames listed in JSON whose files are gone) before rendering anything.
    for sid in sorted({index_to_ids(i)[0] for i in todo}):
        state(sid).flush()

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, initial=total - len(todo), unit="img", desc="render", dynamic_ncols=True,
                   smoothing=0.1)
    since, last = 0, time.monotonic()
    rendered = 0
    pool = None
    try:
        if workers == 1 or len(todo) <= 1:
            fr = FrameRenderer(job, out)
            results = (fr.write(i) for i in todo)
        else:
            import multiprocessing as mp

            ctx = mp.get_context("spawn")  # GL contexts do not survive fork
            pool = ctx.Pool(min(workers, len(todo)), initializer=_init_worker, initargs=(job, str(out)))
            results = pool.imap_unordered(_work, todo, chunksize=1)
            fr = None
        try:
            for rec in results:
                state(rec.scene_id).add(rec)
                rendered += 1
                since += 1
                if bar is not None:
                    bar.update(1)
                if since >= flush_every or time.monotonic() - last > flush_seconds:
                    flush_all()
                    since, last = 0, time.monotonic()
                if on_frame is not None:
                    on_frame(rec)
        finally:
            if fr is not None:
                fr.close()
    finally:
        flush_all()
        if pool is not None:
            pool.terminate()
            pool.join()
        if bar is not None:
            bar.close()
    return RenderSummary(out, rendered, total - len(todo), total, time.perf_counter() - t0)


# --------------------------------------------------------------------------- merge


def merge_shards(shard_dirs: Sequence[str | Path], out: str | Path, progress: bool = True) -> RenderSummary:
    """Join shard folders of one job into ``out`` (which may be one of them).

    The shards must hold the same job (specs equal but for ``shard``). Images are copied (hard-linked where
    possible), the per-scene JSON files are unioned; the merged folder's spec has no shard, so the unsharded
    command resumes it (rendering any frames the shards did not finish).
    """
    dirs = [Path(d) for d in shard_dirs]
    if not dirs:
        raise InputError("posekit render merge needs at least one shard folder")
    specs = []
    for d in dirs:
        p = d / JOB_FILE
        if not p.is_file():
            raise InputError(f"{p}: not a posekit render folder (no {JOB_FILE})")
        specs.append(read_json(p))
    base = {k: v for k, v in specs[0].items() if k != "shard"}
    for d, s in zip(dirs[1:], specs[1:], strict=True):
        diff = _spec_diff(base, {k: v for k, v in s.items() if k != "shard"})
        if diff:
            raise InputError(f"{d / JOB_FILE}: a different job than {dirs[0]} (differs in: {', '.join(diff)})")
    out = Path(out)
    check_writable(out)
    out.mkdir(parents=True, exist_ok=True)
    merged_spec = dict(base, shard=None)
    job_path = out / JOB_FILE
    if job_path.is_file() and out.resolve() not in {d.resolve() for d in dirs}:
        old = read_json(job_path)
        if old != merged_spec:
            raise InputError(f"{job_path}: {out} holds a different render job; merge into an empty folder")
    t0 = time.perf_counter()
    # Dataset-level files come from the first shard (identical in all of them).
    for rel in ["camera.json", "models"]:
        src = dirs[0] / rel
        if src.is_dir():
            for f in sorted(src.iterdir()):
                _copy_file(f, out / rel / f.name)
        elif src.is_file():
            _copy_file(src, out / rel)
    states: dict[int, SceneState] = {}
    n = 0
    it = dirs
    if progress:
        from tqdm import tqdm

        it = tqdm(dirs, unit="shard", desc="merge")
    for d in it:
        split = d / SPLIT
        if not split.is_dir():
            continue
        for sdir in sorted(p for p in split.iterdir() if p.is_dir() and p.name.isdigit()):
            sid = int(sdir.name)
            src = SceneState.load(sdir)
            dst_dir = out / SPLIT / sdir.name
            if sid not in states:
                states[sid] = SceneState.load(dst_dir)
            dst = states[sid]
            for im_id in sorted(src.cameras):
                if im_id in dst.cameras and dst_dir.resolve() == sdir.resolve():
                    continue
                for f in frame_files(sdir, im_id, len(src.gt[im_id])):
                    _copy_file(f, dst_dir / f.relative_to(sdir))
                dst.add(FrameRecord(sid * IMAGES_PER_SCENE + im_id, sid, im_id, src.gt[im_id], src.cameras[im_id]))
                n += 1
    for s in states.values():
        s.dirty = True
        s.flush()
    write_text_atomic(job_path, _spec_text(merged_spec))
    total = int(merged_spec["count"])
    return RenderSummary(out, n, 0, total, time.perf_counter() - t0)


def _copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically (hard link where the filesystem allows); no-op onto itself."""
    if dst.exists() and dst.resolve() == src.resolve():
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f".{dst.name}.merge.tmp"
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)



# --------------------------------------------------------------------------- inputs


def default_camera(size: tuple[int, int]) -> Camera:
    """A pinhole camera with LINEMOD's field of view (fx = fy = 0.894 W, about 63 deg horizontally), centred."""
    W, H = size
    f = 572.4114 / 640.0 * W
    return Camera.from_fxfycxcy(f, f, (W - 1) / 2.0, (H - 1) / 2.0, W, H)


def load_camera(path: str | Path, size: tuple[int, int] | None = None) -> Camera:
    """A camera from JSON: BOP camera.json (fx, fy, cx, cy[, width, height]) or {"cam_K": 9 numbers | 3x3, ...}.

    ``size`` (W, H) overrides the file's width/height; where both exist and differ, K is scaled to the new size
    (the same sensor resampled). Raises InputError naming the file where K is missing or malformed.
    """
    path = Path(path)
    try:
        content = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: camera file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON camera file ({exc})") from None
    if not isinstance(content, dict):
        raise InputError(f"{path}: a camera file must hold a JSON object")
    try:
        if all(k in content for k in ("fx", "fy", "cx", "cy")):
            K = np.array([[content["fx"], 0, content["cx"]], [0, content["fy"], content["cy"]], [0, 0, 1]], float)
        elif "cam_K" in content or "K" in content:
            K = np.asarray(content.get("cam_K", content.get("K")), dtype=np.float64).reshape(3, 3)
        else:
            raise InputError(f"{path}: no intrinsics K (expected fx, fy, cx, cy as in BOP camera.json, or cam_K)")
        file_size = (int(content["width"]), int(content["height"])) if "width" in content and "height" in content \
            else None
    except (TypeError, ValueError) as exc:
        raise InputError(f"{path}: malformed camera intrinsics ({exc})") from None
    if not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{path}: focal lengths must be positive and finite, got fx={K[0, 0]}, fy={K[1, 1]}")
    if file_size is not None and (file_size[0] <= 0 or file_size[1] <= 0):
        raise InputError(f"{path}: width and height must be positive, got {file_size[0]}x{file_size[1]}")
    if size is None:
        if file_size is None:
            raise InputError(f"{path}: no width/height in the camera file; give --size")
        return Camera(K, *file_size)
    if file_size is not None and tuple(size) != file_size:
        sx, sy = size[0] / file_size[0], size[1] / file_size[1]
        # Pixel centres: x' + 0.5 = sx (x + 0.5).
        K = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1]]) @ K
    return Camera(K, *size)
