"""BOP results CSV: exact round trip, tolerated header/blank lines, bad rows with line numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from posekit.data.results import HEADER, read_results, write_results
from posekit.data.types import PoseEstimate
from posekit.errors import BopFormatError


def _estimates(n: int = 5) -> list[PoseEstimate]:
    rng = np.random.default_rng(3)
    R = Rotation.random(n, random_state=4).as_matrix()
    return [
        PoseEstimate(
            obj_id=int(rng.integers(1, 16)), R=R[i], t=rng.normal(0, 100, 3) + [0, 0, 900],
            score=float(rng.random()), scene_id=2, im_id=3 * i, time=0.125 if i % 2 else -1.0,
        )
        for i in range(n)
    ]


def test_round_trip_is_exact(tmp_path: Path):
    ests = _estimates()
    path = write_results(tmp_path / "res.csv", ests)
    lines = path.read_text().splitlines()
    assert lines[0] == HEADER and len(lines) == len(ests) + 1  # BOP's toolkit skips line 1 unconditionally
    back, bad = read_results(path)
    assert bad == []
    assert len(back) == len(ests)
    for a, b in zip(ests, back, strict=True):
        assert (a.scene_id, a.im_id, a.obj_id, a.score, a.time) == (b.scene_id, b.im_id, b.obj_id, b.score, b.time)
        assert np.array_equal(a.R, b.R) and np.array_equal(a.t, b.t)
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write leaves no temp file


def test_header_optional_blank_lines_and_missing_time(tmp_path: Path):
    R = "1 0 0 0 1 0 0 0 1"
    text = f"\n2,3,1,0.5,{R},1 2 3,0.25\n\n  2,4,5,0.9,{R},4 5 6  \n"
    (tmp_path / "r.csv").write_text(text)
    ests, bad = read_results(tmp_path / "r.csv")
    assert bad == [] and [(e.im_id, e.obj_id, e.time) for e in ests] == [(3, 1, 0.25), (4, 5, -1.0)]
    assert np.array_equal(ests[1].t, [4, 5, 6])


def _write_with_bad_rows(path: Path) -> None:
    lines = write_results(path, _estimates(8)).read_text().splitlines()
    fields = lines[6].split(",")
    fields[4] = " ".join(fields[4].split()[:8])  # line 7: R with 8 numbers
    lines[6] = ",".join(fields)
    lines[8] = "2,x,1,0.5,1 0 0 0 1 0 0 0 1,1 2 3,-1"  # line 9: im_id not an integer
    path.write_text("\n".join(lines) + "\n")


def test_bad_row_stops_with_line_number(tmp_path: Path):
    path = tmp_path / "results.csv"
    _write_with_bad_rows(path)
    with pytest.raises(BopFormatError) as exc:
        read_results(path)
    assert str(exc.value) == f"{path} line 7: R has 8 numbers, expected 9"


def test_skip_bad_rows_counts_them(tmp_path: Path):
    path = tmp_path / "results.csv"
    _write_with_bad_rows(path)
    ests, bad = read_results(path, skip_bad_rows=True)
    assert len(ests) == 6
    assert [b.line for b in bad] == [7, 9]
    assert bad[0].reason == "R has 8 numbers, expected 9"
    assert bad[1].reason == "im_id must be an integer, got 'x'"


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("2,3,1,0.5,1 0 0 0 1 0 0 0 1,1 2,0.1", "t has 2 numbers, expected 3"),
        ("2,3,1,nan,1 0 0 0 1 0 0 0 1,1 2 3,0.1", "score must be finite"),
        ("2,3,1,0.5,1 0 0 0 1 0 0 0 q,1 2 3,0.1", "R must be a number, got 'q'"),
        ("2,3,-1,0.5,1 0 0 0 1 0 0 0 1,1 2 3,0.1", "obj_id must be non-negative"),
        ("2,3,1,0.5", "has 4 comma-separated fields, expected 7"),
    ],
)
def test_each_kind_of_bad_row_is_named(tmp_path: Path, row: str, reason: str):
    path = tmp_path / "r.csv"
    path.write_text(f"{HEADER}\n{row}\n")
    with pytest.raises(BopFormatError, match=f"r.csv line 2: {reason}"):
        read_results(path)


def test_missing_file_is_named(tmp_path: Path):
    with pytest.raises(BopFormatError, match="nope.csv: results file not found"):
        read_results(tmp_path / "nope.csv")
