"""Make the photo-background corpus of posekit's benchmarks from Debian's wallpaper packages (not kept in the repo).

    python benchmarks/photo_backgrounds.py --out /work/runs/backgrounds [--size 640]

Installs ``plasma-workspace-wallpapers`` and ``mate-backgrounds`` with apt-get where they are missing (about 100
photographs and renders: landscapes, water, plants, textures), keeps one image per wallpaper theme (its largest
variant), and writes it downscaled to ``--size`` pixels on the longer side as JPEG, so that drawing a background
for a training image decodes a small file, not a 5120 x 2880 PNG. Pass the folder as ``--backgrounds``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

ROOTS = (Path("/usr/share/wallpapers"), Path("/usr/share/backgrounds"))
PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")
SUFFIXES = (".jpg", ".jpeg", ".png")


def install() -> None:
    if all(any(r.rglob("*.jpg")) or any(r.rglob("*.png")) for r in ROOTS if r.exists()) and all(r.exists() for r in ROOTS):
        return
    if shutil.which("apt-get") is None:
        raise SystemExit("apt-get not found: install the wallpaper packages yourself, or pass any photo folder")
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", *PACKAGES], check=True,
                   env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})


def pick() -> list[Path]:
    """One file per theme folder (the largest), so a wallpaper's many resolutions count once."""
    best: dict[Path, Path] = {}
    for root in ROOTS:
        for p in root.rglob("*"):
            if p.is_file() and p.suffix.lower() in SUFFIXES:
                # KDE wallpapers: one folder per theme with many resolutions; MATE: one file per picture
                key = root / p.relative_to(root).parts[0] if root.name == "wallpapers" else p
                if key not in best or p.stat().st_size > best[key].stat().st_size:
                    best[key] = p
    return sorted(best.values())


def main() -> None:
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--size", type=int, default=640)
    a = ap.parse_args()
    install()
    a.out.mkdir(parents=True, exist_ok=True)
    n = 0
    for p in pick():
        with Image.open(p) as im:
            im = im.convert("RGB")
            im.thumbnail((a.size, a.size), Image.LANCZOS)
            root = next(r for r in ROOTS if r in p.parents)
            name = "_".join(p.relative_to(root).parts).replace(" ", "_")
            im.save(a.out / (Path(name).stem + ".jpg"), quality=90)
            n += 1
    print(f"wrote {n} backgrounds to {a.out}")


if __name__ == "__main__":
    main()
