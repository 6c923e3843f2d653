"""Loaded CAD files kept for the next call: the parsed :class:`ObjectModel` of a file as one ``.npz`` under the
model store's root (``ROOT/cad/<key>.npz``, ROOT as in :mod:`posekit.data.store`), keyed by the file's resolved
path, size and modification time and the load's options. A hit skips the import of trimesh and scipy and the parse
and measurement of the mesh (docs/benchmarks.md, "Start-up of one estimate call"); a changed file gets a new key.
A units warning the first load gave is given again on every hit. A cache that cannot be read or written is passed
by: the file is loaded as if there were none.

The decimated rendering proxies of a part (:func:`decimate_cached`) live there too, keyed by the mesh's content and
the face budget: a render-and-compare stage on a part of more faces than its budget (the feature search's 3,000,
the template detector's checks' 10,000: most real CAD files) then neither imports open3d (1.7-4 s on 2 cores) nor decimates again on the next call."""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path

import numpy as np

from posekit.cad.model import ObjectModel, UnitsWarning

CACHE_VERSION = 1
_ARRAYS = ("vertices", "faces", "vertex_colors", "vertex_normals", "texture_uv", "texture_image", "center_shift")


def cache_path(path: str | Path, units: str, center: bool, symmetries: str, root: Path | None = None) -> Path:
    """Where the cached model of this file and these options lives (whether or not it exists)."""
    import posekit
    from posekit.data.store import store_root

    p = Path(path).resolve()
    st = p.stat()
    # posekit's version too: a new loader (units rules, hash) never reads an older one's models
    key = json.dumps([CACHE_VERSION, posekit.__version__, str(p), st.st_size, st.st_mtime_ns, units, bool(center),
                      symmetries])
    return (root or store_root()) / "cad" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def load_model_cached(path: str | Path, units: str = "auto", center: bool = False, obj_id: int | None = None,
                      symmetries: str = "none", root: Path | None = None) -> ObjectModel:
    """:func:`posekit.cad.load.load_model` of ``path`` (``symmetries`` "none" or "detect"), from the cache when
    the same file was loaded with the same options before."""
    try:
        where = cache_path(path, units, center, symmetries, root)
    except OSError:  # no such file, or unreadable: load_model says so in its own words
        where = None
    if where is not None and where.is_file():
        found = _read(where)
        if found is not None:
            model, warning = found
            model.obj_id, model.source = obj_id, str(path)
            if warning:  # the first load warned: so does every hit
                warnings.warn(warning, UnitsWarning, stacklevel=2)
            return model
    from posekit.cad.load import load_model

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_model(path, units=units, center=center, obj_id=obj_id, symmetries=symmetries)
    warning = None
    for w in caught:
        if issubclass(w.category, UnitsWarning):
            warning = str(w.message)
        warnings.warn(w.message, w.category, stacklevel=2)
    if where is not None:
        _write(where, model, warning)
    return model


def decimate_cached(model: ObjectModel, max_faces: int, root: Path | None = None) -> ObjectModel:
    """:func:`posekit.cad.decimate.decimate` of ``model`` to ``max_faces``, from the store when the same mesh (its
    vertices, faces, colours and texture) was decimated to the same budget before; ``model`` itself when it has no
    more faces than that. The proxy keeps the source's obj_id, name and source."""
    if len(model.faces) <= max_faces:
        return model
    h = hashlib.sha256(json.dumps([CACHE_VERSION, int(max_faces)]).encode())
    for k in ("vertices", "faces", "vertex_colors", "texture_uv", "texture_image"):
        a = getattr(model, k)
        h.update(k.encode())
        if a is not None:
            a = np.ascontiguousarray(a)
            h.update(f"{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
    from posekit.data.store import store_root

    where = (root or store_root()) / "cad" / f"decimated-{h.hexdigest()[:24]}.npz"
    found = _read(where) if where.is_file() else None
    if found is not None:
        proxy = found[0]
        proxy.obj_id, proxy.source = model.obj_id, model.source
        return proxy
    from posekit.cad.decimate import decimate

    proxy = decimate(model, max_faces)
    _write(where, proxy, None)
    return proxy


def _write(where: Path, model: ObjectModel, warning: str | None) -> None:
    meta = {"diameter": model.diameter, "mesh_hash": model.mesh_hash, "name": model.name,
            "units_note": model.units_note, "warning": warning,
            "symmetries_discrete": [np.asarray(s).tolist() for s in model.symmetries_discrete],
            "symmetries_continuous": [{k: np.asarray(v).tolist() for k, v in s.items()}
                                      for s in model.symmetries_continuous]}
    arrays = {k: getattr(model, k) for k in _ARRAYS if getattr(model, k) is not None}
    tmp = where.with_name(f".{where.name}.{os.getpid()}.tmp")
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), **arrays)
        os.replace(tmp, where)
    except (OSError, ValueError, TypeError):  # a read-only or full store: the next call parses the file again
        pass
    finally:
        tmp.unlink(missing_ok=True)


def _read(where: Path) -> tuple[ObjectModel, str | None] | None:
    """The cached model and the units warning its first load gave; None where the file is not a whole entry."""
    try:
        with np.load(where, allow_pickle=False) as z:
            meta = json.loads(str(z["meta"]))
            arrays = {k: z[k] for k in _ARRAYS if k in z.files}
        model = ObjectModel(
            vertices=arrays["vertices"], faces=arrays["faces"], diameter=float(meta["diameter"]),
            mesh_hash=meta["mesh_hash"], vertex_colors=arrays.get("vertex_colors"),
            vertex_normals=arrays.get("vertex_normals"), texture_uv=arrays.get("texture_uv"),
            texture_image=arrays.get("texture_image"),
            symmetries_discrete=[np.asarray(s, dtype=np.float64) for s in meta["symmetries_discrete"]],
            symmetries_continuous=[{k: np.asarray(v, dtype=np.float64) for k, v in s.items()}
                                   for s in meta["symmetries_continuous"]],
            name=meta["name"], units_note=meta["units_note"], center_shift=arrays.get("center_shift"))
        return model, meta["warning"]
    except Exception:  # noqa: BLE001 -- a truncated, foreign or older entry of any shape: parse the file instead
        return None
