"""The regressor's presets in one table.

``paper``: 640 x 480 images, FPN width 256 and torchvision's head sizes (a GPU's); ``cpu``: 320 x 240 images,
FPN width 64, light heads, the backbone frozen through its stride-8 stage: about 0.4 s per batch of 4 on 2 CPU
cores plus 0.1 s to render each training image (measured, docs/training.md): its 9,000 steps took 2 h 16 min for
the 8 LM-O objects; ``tiny``: for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from posekit.errors import InputError


@dataclass(frozen=True)
class RegressPreset:
    """image_size (W, H) of training images (test images are resized to the same scale); fpn: FPN width;
    box_head / mask_head / pose_head: head widths; freeze: the deepest backbone map kept at its ImageNet weights;
    objects: targets per rendered image (min, max); apparent_size: the objects' size as a fraction of the image."""

    name: str
    image_size: tuple[int, int]
    fpn: int
    box_head: int
    mask_head: int
    pose_head: int
    batch: int
    steps: int
    lr: float
    checkpoint_every: int
    sample_every: int
    freeze: str | None = "s8"
    objects: tuple[int, int] = (2, 5)
    distractors: tuple[int, int] = (0, 2)
    apparent_size: tuple[float, float] = (0.15, 0.5)
    views: str = "upper"
    render_max_faces: int = 3000
    rpn_post_nms_train: int = 300
    rpn_post_nms_test: int = 100
    box_batch_per_image: int = 128
    pose_points: int = 128
    lr_schedule: str = "cosine"
    threads: int | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("image_size", "objects", "distractors", "apparent_size"):
            d[k] = list(d[k])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> RegressPreset:
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for k in ("image_size", "objects", "distractors", "apparent_size"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)

    def with_steps(self, steps: int | None) -> RegressPreset:
        return self if steps is None else replace(self, steps=int(steps))

    def with_apparent_size(self, sizes: tuple[float, float] | None) -> RegressPreset:
        return self if sizes is None else replace(self, apparent_size=(float(sizes[0]), float(sizes[1])))


PRESETS: dict[str, RegressPreset] = {
    "paper": RegressPreset(name="paper", image_size=(640, 480), fpn=256, box_head=1024, mask_head=256, pose_head=1024,
                           batch=8, steps=40000, lr=2e-4, checkpoint_every=1000, sample_every=1000, freeze="s4",
                           render_max_faces=20000, rpn_post_nms_train=1000, rpn_post_nms_test=300,
                           box_batch_per_image=256),
    "cpu": RegressPreset(name="cpu", image_size=(320, 240), fpn=64, box_head=256, mask_head=64, pose_head=256,
                         batch=4, steps=9000, lr=3e-4, checkpoint_every=250, sample_every=500),
    "tiny": RegressPreset(name="tiny", image_size=(160, 120), fpn=32, box_head=128, mask_head=32, pose_head=128,
                          batch=2, steps=400, lr=5e-4, checkpoint_every=100, sample_every=0, objects=(1, 2),
                          distractors=(0, 0), apparent_size=(0.35, 0.6), views="sphere", pose_points=64),
}


def get_preset(name: str) -> RegressPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}") from None
