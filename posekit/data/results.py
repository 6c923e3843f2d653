"""BOP results CSV: ``scene_id,im_id,obj_id,score,R,t,time``, one pose estimate per row.

R is the model-to-camera rotation, 9 numbers row-major separated by spaces; t is
the translation in mm, 3 numbers separated by spaces; time is the seconds the
method spent on the whole image (-1 where unknown). The BOP toolkit skips the
first line unconditionally, so :func:`write_results` always writes the header.

A malformed row raises :class:`BopFormatError` naming the file and line, unless
the reader is told to skip bad rows; then each one is returned as a :class:`BadRow`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from posekit.data.jsonio import write_text_atomic
from posekit.data.types import PoseEstimate
from posekit.errors import BopFormatError

HEADER = "scene_id,im_id,obj_id,score,R,t,time"
COLUMNS = HEADER.split(",")


@dataclass
class BadRow:
    """A row that could not be parsed: its 1-based line number, its text and what is wrong."""

    line: int
    text: str
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


class _RowError(ValueError):
    pass


def _int_field(text: str, name: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise _RowError(f"{name} must be an integer, got {text.strip()!r}") from None
    if value < 0:
        raise _RowError(f"{name} must be non-negative, got {value}")
    return value


def _float_field(text: str, name: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise _RowError(f"{name} must be a number, got {text.strip()!r}") from None
    if not math.isfinite(value):
        raise _RowError(f"{name} must be finite, got {text.strip()}")
    return value


def _vector_field(text: str, name: str, n: int) -> np.ndarray:
    parts = text.split()
    if len(parts) != n:
        raise _RowError(f"{name} has {len(parts)} numbers, expected {n}")
    values = [_float_field(p, name) for p in parts]
    return np.asarray(values, dtype=np.float64)


def parse_result_row(text: str) -> PoseEstimate:
    """One CSV row -> PoseEstimate; raises ValueError saying what is wrong (no file or line)."""
    fields = text.strip().split(",")
    if len(fields) not in (6, 7):
        raise _RowError(f"has {len(fields)} comma-separated fields, expected 7 ({HEADER})")
    scene_id = _int_field(fields[0], "scene_id")
    im_id = _int_field(fields[1], "im_id")
    obj_id = _int_field(fields[2], "obj_id")
    score = _float_field(fields[3], "score")
    R = _vector_field(fields[4], "R", 9).reshape(3, 3)
    t = _vector_field(fields[5], "t", 3)
    time = _float_field(fields[6], "time") if len(fields) == 7 else -1.0
    return PoseEstimate(obj_id=obj_id, R=R, t=t, score=score, scene_id=scene_id, im_id=im_id, time=time)


def format_result_row(est: PoseEstimate) -> str:
    """PoseEstimate -> one CSV row (numbers written as their shortest exact repr, so they read back equal)."""
    if est.scene_id is None or est.im_id is None:
        raise ValueError(f"estimate of obj_id {est.obj_id} has no scene_id/im_id; BOP rows need both")
    R = " ".join(repr(float(v)) for v in np.asarray(est.R, dtype=np.float64).reshape(-1))
    t = " ".join(repr(float(v)) for v in np.asarray(est.t, dtype=np.float64).reshape(-1))
    return f"{int(est.scene_id)},{int(est.im_id)},{int(est.obj_id)},{float(est.score)!r},{R},{t},{float(est.time)!r}"


def read_results(path: str | Path, skip_bad_rows: bool = False) -> tuple[list[PoseEstimate], list[BadRow]]:
    """Read a BOP results CSV -> (estimates, bad rows).

    A header line and blank lines are skipped. A malformed row raises BopFormatError
    ("<path> line 7: R has 8 numbers, expected 9"), or with ``skip_bad_rows`` is left
    out and returned in the second list.
    """
    path = Path(path)
    if not path.is_file():
        raise BopFormatError(f"{path}: results file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BopFormatError(f"{path}: cannot be read ({exc})") from None
    estimates: list[PoseEstimate] = []
    bad: list[BadRow] = []
    seen_content = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if not seen_content:
            seen_content = True
            if stripped.replace(" ", "").lower().startswith("scene_id,"):
                continue
        try:
            estimates.append(parse_result_row(stripped))
        except _RowError as exc:
            if not skip_bad_rows:
                raise BopFormatError(f"{path} line {lineno}: {exc}") from None
            bad.append(BadRow(lineno, line, str(exc)))
    return estimates, bad


def write_results(path: str | Path, estimates: Iterable[PoseEstimate]) -> Path:
    """Write estimates as a BOP results CSV (header included), atomically."""
    rows = [HEADER] + [format_result_row(e) for e in estimates]
    return write_text_atomic(path, "\n".join(rows) + "\n")
