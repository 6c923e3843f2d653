"""The template presets in one table.

``default``: 96-px crops (the stride-8 map is 12 x 12 x 40), 240 view points over the whole sphere
x 18 in-plane turns = 4,320 templates, the density of the 120 x 18 upper-hemisphere set measured
in the templates issue (nearest template about 8 degrees away). ``upper`` keeps that density on the
upper hemisphere only (parts that stand on a table, seen from above: LINEMOD). ``tiny`` is for tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from posekit.errors import InputError
from posekit.render.centred import CropSpec

HEMISPHERES = ("full", "upper")


@dataclass(frozen=True)
class TemplatePreset:
    """image_size: crop side S the backbone sees; render_size: side of the clean renders the crops are cut
    from; views x inplane templates over the ``hemisphere``; ``feature``: the backbone map compared."""

    name: str
    image_size: int = 96
    render_size: int = 192
    views: int = 240
    inplane: int = 18
    hemisphere: str = "full"
    feature: str = "s8"
    crop_pad: float = 1.2
    distance_factor: float = 5.0
    render_max_faces: int | None = 10000

    @property
    def crop_spec(self) -> CropSpec:
        return CropSpec(image_size=self.image_size, render_size=self.render_size, crop_pad=self.crop_pad,
                        distance_factor=self.distance_factor, render_max_faces=self.render_max_faces)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TemplatePreset:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def with_options(self, views: int | None = None, inplane: int | None = None, hemisphere: str | None = None,
                     size: int | None = None) -> TemplatePreset:
        """This preset with the CLI's overrides; InputError for values out of range."""
        p = self
        if views is not None:
            if views < 1:
                raise InputError(f"--views must be positive, got {views}")
            p = replace(p, views=int(views))
        if inplane is not None:
            if inplane < 1:
                raise InputError(f"--inplane must be positive, got {inplane}")
            p = replace(p, inplane=int(inplane))
        if hemisphere is not None:
            if hemisphere not in HEMISPHERES:
                raise InputError(f"--hemisphere must be one of {', '.join(HEMISPHERES)}, got {hemisphere!r}")
            p = replace(p, hemisphere=hemisphere)
        if size is not None:
            if size < 32 or size % 8:
                raise InputError(f"--size must be a multiple of 8 and at least 32, got {size}")
            p = replace(p, image_size=int(size), render_size=2 * int(size))
        return p


PRESETS: dict[str, TemplatePreset] = {
    "default": TemplatePreset(name="default"),
    "upper": TemplatePreset(name="upper", views=120, hemisphere="upper"),
    "tiny": TemplatePreset(name="tiny", image_size=64, render_size=128, views=120, inplane=12),
}


def get_preset(name: str) -> TemplatePreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}") from None
