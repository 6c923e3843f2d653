"""Scene sampling and domain randomisation for synthetic images.

``sample_scene(config, targets, distractors, camera, rng)`` draws everything one image needs (object poses,
distractors, random primitives, occluders, lights, material and colour jitter, background, sensor noise) from one
numpy Generator. The dataset generator seeds that Generator with ``SeedSequence([job seed, image index])``, so an
image is a pure function of (seed, index): workers, shards and resumed runs produce the same bytes.

Poses are BOP model-to-camera (R, t mm, OpenCV camera). Objects are placed by their bounding-box centre (the
CAD frame's origin may lie anywhere), the recorded pose is that of the model frame as loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from posekit.cad.model import ObjectModel
from posekit.geometry.camera import Camera
from posekit.render.views import (
    align_optical_axis,
    clean_light,
    fibonacci_sphere,
    inplane_rotation,
    look_at_rotation,
)

MODES = ("random", "clean")
VIEWS = ("sphere", "upper")
PRIMITIVE_SHAPES = ("box", "sphere", "cylinder", "cone", "capsule", "torus")


@dataclass(frozen=True)
class RandomizationConfig:
    """Every domain-randomisation knob with its default (ranges are inclusive (min, max)).

    mode: "random" (cluttered, randomised) or "clean" (one object centred at ``clean_distance``, black, fixed light).
    views: "sphere" (rotations uniform over SO(3)) or "upper" (camera in the model's upper hemisphere, z >= 0).
    distance: camera-to-object distance range in mm; None -> per object from ``apparent_size``.
    apparent_size: with distance None, the object's diameter spans this fraction of the shorter image side.
    out_of_frame: how much of an object's extent (fraction of its projected diameter) may fall outside the image.
    objects: how many target instances per image (object ids drawn uniformly, with replacement).
    distractors: how many instances of the distractor CAD models per image (when there are any).
    primitives: up to this many random primitives (box, sphere, cylinder, cone, capsule, torus) per image.
    occluders: up to this many primitives placed between the camera and a target.
    lights: number of point lights; light_intensity its range (posekit units at the object's distance);
    light_saturation: how coloured lights may be (0 = white); ambient: linear ambient light range.
    color_jitter: per-instance multiplicative jitter of a target's vertex colours (0 = off); plain-grey models get a
    random tint of this strength. metallic / roughness: PBR material ranges.
    background: "procedural", "images" (needs a folder) or "none" (black).
    noise: max std of Gaussian sensor noise (8-bit levels); blur: max Gaussian blur radius (px), applied to
    ``blur_prob`` of the images.
    clean_distance: the distance (mm) of clean views; None -> 3 diameters of the largest target.
    """

    mode: str = "random"
    views: str = "sphere"
    distance: tuple[float, float] | None = None
    apparent_size: tuple[float, float] = (0.2, 0.6)
    out_of_frame: float = 0.25
    objects: tuple[int, int] = (1, 3)
    distractors: tuple[int, int] = (0, 2)
    primitives: int = 2
    occluders: int = 1
    lights: tuple[int, int] = (1, 3)
    light_intensity: tuple[float, float] = (0.5, 2.0)
    light_saturation: float = 0.3
    ambient: tuple[float, float] = (0.1, 0.5)
    color_jitter: float = 0.15
    metallic: tuple[float, float] = (0.0, 0.3)
    roughness: tuple[float, float] = (0.4, 1.0)
    background: str = "procedural"
    noise: float = 4.0
    blur: float = 1.0
    blur_prob: float = 0.3
    clean_distance: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.views not in VIEWS:
            raise ValueError(f"views must be one of {VIEWS}, got {self.views!r}")
        if self.background not in ("procedural", "images", "none"):
            raise ValueError(f"background must be procedural, images or none, got {self.background!r}")
        for name in ("distance", "apparent_size", "objects", "distractors", "lights", "light_intensity", "ambient",
                     "metallic", "roughness"):
            v = getattr(self, name)
            if v is not None:
                if len(v) != 2 or v[0] > v[1] or v[0] < 0:
                    raise ValueError(f"{name} must be a range (min, max) with 0 <= min <= max, got {v}")
                object.__setattr__(self, name, tuple(v))
        if self.distance is not None and self.distance[0] <= 0:
            raise ValueError(f"distance must be positive, got {self.distance}")
        if self.objects[1] < 1:
            raise ValueError(f"objects per image must allow at least 1, got {self.objects}")

    def to_json(self) -> dict:
        """A JSON-able dict (lists for tuples); part of the saved job spec."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class PrimitiveSpec:
    """A random primitive shape: ``shape`` (one of PRIMITIVE_SHAPES) and its size parameters in mm."""

    shape: str
    dims: tuple[float, ...]

    def model(self) -> ObjectModel:
        """The primitive's ObjectModel, built with trimesh.creation (deterministic)."""
        import trimesh

        s, d = self.shape, self.dims
        if s == "box":
            mesh = trimesh.creation.box(extents=d)
        elif s == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=2, radius=1.0)
            mesh.apply_scale(d)  # an ellipsoid
        elif s == "cylinder":
            mesh = trimesh.creation.cylinder(radius=d[0], height=d[1], sections=24)
        elif s == "cone":
            mesh = trimesh.creation.cone(radius=d[0], height=d[1], sections=24)
            mesh.apply_translation([0, 0, -d[1] / 2])
        elif s == "capsule":
            mesh = trimesh.creation.capsule(height=d[1], radius=d[0], count=[12, 12])
        elif s == "torus":
            mesh = trimesh.creation.torus(major_radius=d[0], minor_radius=d[1], major_sections=24, minor_sections=12)
        else:
            raise ValueError(f"unknown primitive {s!r}")
        v = np.asarray(mesh.vertices, dtype=np.float64)
        v = v - 0.5 * (v.min(0) + v.max(0))
        h = hashlib.sha256(repr((s, d)).encode()).hexdigest()
        diam = float(np.linalg.norm(v.max(0) - v.min(0)))
        return ObjectModel(vertices=v, faces=np.asarray(mesh.faces, dtype=np.int64), diameter=diam, mesh_hash=h,
                           vertex_normals=np.asarray(mesh.vertex_normals, dtype=np.float32), name=f"primitive-{s}")


@dataclass
class PlacedObject:
    """One object instance in a sampled scene.

    role: "target" (annotated), "distractor" (another CAD model), "primitive" or "occluder" (random shapes).
    index: into the job's targets / distractors (-1 for primitives); primitive: the shape for primitives.
    R, t: model-to-camera pose (mm). color: RGB [0, 1] of a plain material, or None (vertex colours).
    color_scale: per-channel multiplier of the vertex colours (colour jitter of textured targets).
    """

    role: str
    index: int
    R: np.ndarray
    t: np.ndarray
    color: tuple | None = None
    color_scale: tuple | None = None
    metallic: float = 0.0
    roughness: float = 0.8
    primitive: PrimitiveSpec | None = None


@dataclass
class LightSpec:
    """A sampled light in the camera frame (mm); mirrors posekit.render.types.Light."""

    kind: str
    color: tuple
    intensity: float
    position: tuple
    direction: tuple

    def to_light(self):
        from posekit.render.types import Light

        return Light(kind=self.kind, color=self.color, intensity=self.intensity, position=self.position,
                     direction=self.direction)


@dataclass
class SceneSample:
    """Everything one synthetic image needs, drawn from its own Generator.

    ``bg_seed`` seeds the background (drawn later, at render time, so sampling stays cheap); ``noise_std`` and
    ``blur_radius`` are the sensor effects (0 = none).
    """

    objects: list[PlacedObject]
    lights: list[LightSpec]
    ambient: float
    bg_seed: int
    noise_std: float
    blur_radius: float
    background: str = "procedural"
    extra: dict = field(default_factory=dict)

    @property
    def targets(self) -> list[PlacedObject]:
        return [o for o in self.objects if o.role == "target"]


def image_rng(seed: int, index: int) -> np.random.Generator:
    """The Generator of image ``index`` of a job seeded ``seed``: independent streams per image."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), int(index)])))


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation uniform over SO(3) (a normalised 4D Gaussian is a uniform unit quaternion)."""
    q = rng.normal(size=4)
    return Rotation.from_quat(q / np.linalg.norm(q)).as_matrix()


def upper_view_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation seeing the model from a uniform point of its upper hemisphere, with a uniform in-plane angle."""
    z = rng.uniform(0.0, 1.0)
    phi = rng.uniform(0.0, 2 * np.pi)
    r = np.sqrt(1.0 - z * z)
    v = np.array([r * np.cos(phi), r * np.sin(phi), z])
    return inplane_rotation(rng.uniform(0.0, 2 * np.pi)) @ look_at_rotation(v)


def auto_distance_range(model: ObjectModel, camera: Camera, apparent_size: tuple[float, float]) -> tuple[float, float]:
    """Distances (mm) at which the model's diameter spans ``apparent_size`` (fractions) of the shorter image side."""
    f = 0.5 * (camera.K[0, 0] + camera.K[1, 1])
    side = min(camera.width, camera.height)
    lo_frac, hi_frac = max(apparent_size[0], 1e-3), max(apparent_size[1], 1e-3)
    return (f * model.diameter / (hi_frac * side), f * model.diameter / (lo_frac * side))


def _bbox_center(model: ObjectModel) -> np.ndarray:
    return model.bbox_min + 0.5 * model.bbox_size


def _place(rng: np.random.Generator, config: RandomizationConfig, model: ObjectModel, camera: Camera,
           R_view: np.ndarray, dist_range: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(R, t, centre_cam): a pose putting the model's bbox centre at a random pixel and distance."""
    d = rng.uniform(*dist_range)
    f = 0.5 * (camera.K[0, 0] + camera.K[1, 1])
    r_px = 0.5 * model.diameter * f / d
    m = r_px * (1.0 - 2.0 * config.out_of_frame)  # how far inside the border the centre must stay
    W, H = camera.width, camera.height
    u = rng.uniform(m, W - 1 - m) if W - 1 - 2 * m > 0 else (W - 1) / 2
    v = rng.uniform(m, H - 1 - m) if H - 1 - 2 * m > 0 else (H - 1) / 2
    ray = np.linalg.solve(camera.K, np.array([u, v, 1.0]))
    centre = ray / ray[2] * d
    R = align_optical_axis(centre) @ R_view
    t = centre - R @ _bbox_center(model)
    return R, t, centre


def _sample_rotation(rng: np.random.Generator, config: RandomizationConfig) -> np.ndarray:
    return upper_view_rotation(rng) if config.views == "upper" else random_rotation(rng)


def _overlaps(centre: np.ndarray, radius: float, placed: list[tuple[np.ndarray, float]], slack: float = 0.8) -> bool:
    return any(np.linalg.norm(centre - c) < slack * (radius + r) for c, r in placed)


def _random_primitive(rng: np.random.Generator, size: float) -> PrimitiveSpec:
    """A primitive whose largest extent is about ``size`` mm."""
    shape = PRIMITIVE_SHAPES[int(rng.integers(0, len(PRIMITIVE_SHAPES)))]
    a = rng.uniform(0.3, 1.0, size=3) * size
    if shape == "box":
        dims = tuple(float(x) for x in a)
    elif shape == "sphere":
        dims = tuple(float(x) / 2 for x in a)
    elif shape in ("cylinder", "cone"):
        dims = (float(a[0]) / 2, float(a[1]))
    elif shape == "capsule":
        dims = (float(a[0]) / 4, float(a[1]) / 2)
    else:  # torus
        dims = (float(a[0]) / 3, float(a[0]) / 3 * rng.uniform(0.15, 0.45))
    return PrimitiveSpec(shape, tuple(round(x, 3) for x in dims))


def _light_color(rng: np.random.Generator, saturation: float) -> tuple:
    import colorsys

    return tuple(float(c) for c in colorsys.hsv_to_rgb(rng.uniform(0, 1), rng.uniform(0, saturation), 1.0))


def _random_color(rng: np.random.Generator) -> tuple:
    return tuple(float(c) for c in rng.uniform(0.05, 1.0, size=3))


def sample_clean_scene(config: RandomizationConfig, targets: list[ObjectModel], rng: np.random.Generator,
                       index: int) -> SceneSample:
    """Clean mode: target ``index % n`` centred at the clean distance, rotation per ``config.views``."""
    k = index % len(targets)
    model = targets[k]
    d = config.clean_distance if config.clean_distance is not None else 3.0 * max(m.diameter for m in targets)
    R = _sample_rotation(rng, config)
    t = np.array([0.0, 0.0, d]) - R @ _bbox_center(model)
    L = clean_light()
    light = LightSpec(L.kind, tuple(L.color), float(L.intensity), tuple(L.position), tuple(L.direction))
    return SceneSample(objects=[PlacedObject("target", k, R, t)], lights=[light], ambient=0.3, bg_seed=0,
                       noise_std=0.0, blur_radius=0.0, background="none")


def sample_scene(config: RandomizationConfig, targets: list[ObjectModel], distractors: list[ObjectModel],
                 camera: Camera, rng: np.random.Generator, index: int = 0) -> SceneSample:
    """Draw one randomised scene (see RandomizationConfig); every number comes from ``rng``, in a fixed order."""
    if not targets:
        raise ValueError("at least one target model is needed")
    if config.mode == "clean":
        return sample_clean_scene(config, targets, rng, index)
    placed: list[tuple[np.ndarray, float]] = []
    objects: list[PlacedObject] = []

    def dist_range(model: ObjectModel) -> tuple[float, float]:
        return config.distance if config.distance is not None else auto_distance_range(model, camera,
                                                                                       config.apparent_size)

    def place_free(model: ObjectModel, R_view: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # Up to 10 tries to avoid interpenetrating bounding spheres; the last try is kept regardless.
        for _ in range(10):
            R, t, c = _place(rng, config, model, camera, R_view, dist_range(model))
            if not _overlaps(c, model.diameter / 2, placed):
                break
        placed.append((c, model.diameter / 2))
        return R, t, c

    n_targets = int(rng.integers(config.objects[0], config.objects[1] + 1))
    n_targets = max(n_targets, 1)
    for _ in range(n_targets):
        k = int(rng.integers(0, len(targets)))
        model = targets[k]
        R, t, _ = place_free(model, _sample_rotation(rng, config))
        j = config.color_jitter
        if model.vertex_colors is not None:
            color, scale = None, tuple(float(x) for x in rng.uniform(1 - j, 1 + j, size=3))
        else:
            base = np.array([0.7, 0.7, 0.7])
            color, scale = tuple(float(x) for x in np.clip(base * rng.uniform(1 - j, 1 + j, size=3), 0, 1)), None
        objects.append(PlacedObject("target", k, R, t, color=color, color_scale=scale,
                                    metallic=float(rng.uniform(*config.metallic)),
                                    roughness=float(rng.uniform(*config.roughness))))

    mean_diam = float(np.mean([m.diameter for m in targets]))
    if distractors:
        for _ in range(int(rng.integers(config.distractors[0], config.distractors[1] + 1))):
            k = int(rng.integers(0, len(distractors)))
            model = distractors[k]
            R, t, _ = place_free(model, random_rotation(rng))
            color = None if model.vertex_colors is not None else _random_color(rng)
            objects.append(PlacedObject("distractor", k, R, t, color=color,
                                        metallic=float(rng.uniform(*config.metallic)),
                                        roughness=float(rng.uniform(*config.roughness))))
    for _ in range(int(rng.integers(0, config.primitives + 1))):
        spec = _random_primitive(rng, mean_diam * rng.uniform(0.3, 1.0))
        model = spec.model()
        R, t, _ = place_free(model, random_rotation(rng))
        objects.append(PlacedObject("primitive", -1, R, t, color=_random_color(rng),
                                    metallic=float(rng.uniform(*config.metallic)),
                                    roughness=float(rng.uniform(*config.roughness)), primitive=spec))
    tgt = [o for o in objects if o.role == "target"]
    for _ in range(int(rng.integers(0, config.occluders + 1))):
        victim = tgt[int(rng.integers(0, len(tgt)))]
        vm = targets[victim.index]
        centre = victim.t + victim.R @ _bbox_center(vm)
        frac = rng.uniform(0.5, 0.85)
        # Shift sideways by up to the target's radius so the occluder covers part of it, not always the middle.
        side = rng.normal(size=2) * 0.5 * vm.diameter * rng.uniform(0.3, 1.0) / np.sqrt(2)
        c = centre * frac + np.array([side[0], side[1], 0.0]) * frac
        spec = _random_primitive(rng, vm.diameter * frac * rng.uniform(0.3, 0.7))
        R = random_rotation(rng)
        objects.append(PlacedObject("occluder", -1, R, c, color=_random_color(rng),
                                    metallic=float(rng.uniform(*config.metallic)),
                                    roughness=float(rng.uniform(*config.roughness)), primitive=spec))

    lights = []
    z_mean = float(np.mean([o.t[2] for o in tgt]))
    for _ in range(int(rng.integers(config.lights[0], config.lights[1] + 1))):
        # A point light on the camera's side of the scene: random direction within 80 deg of the
        # object-to-camera axis, at 0.5-1.5x the objects' distance from them.
        dirn = rng.normal(size=3)
        dirn[2] = -abs(dirn[2]) - 0.2
        dirn /= np.linalg.norm(dirn)
        pos = np.array([0.0, 0.0, z_mean]) + dirn * z_mean * rng.uniform(0.5, 1.5)
        dist = float(np.linalg.norm(pos - np.array([0.0, 0.0, z_mean])))
        # Intensity is given at the light-to-object distance: scale posekit's 1 m reference by distance^2.
        inten = float(rng.uniform(*config.light_intensity)) * (dist / 1000.0) ** 2
        lights.append(LightSpec("point", _light_color(rng, config.light_saturation), inten,
                                tuple(float(x) for x in pos), (0.0, 0.0, 1.0)))
    ambient = float(rng.uniform(*config.ambient))
    bg_seed = int(rng.integers(0, 2**63 - 1))
    noise = float(rng.uniform(0.0, config.noise))
    blur = float(rng.uniform(0.0, config.blur)) if rng.random() < config.blur_prob else 0.0
    return SceneSample(objects=objects, lights=lights, ambient=ambient, bg_seed=bg_seed, noise_std=noise,
                       blur_radius=blur, background=config.background)


def fibonacci_views(n: int, hemisphere: bool = False) -> np.ndarray:
    """Object-to-camera rotations for ``n`` evenly spread view points (no in-plane turn)."""
    return look_at_rotation(fibonacci_sphere(n, hemisphere))
