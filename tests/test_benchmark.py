"""`posekit benchmark`: one command from a BOP folder to a report (table, curves, sheets), resumable, refusing a
different run into the same folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from helpers import PART


def _run(home, *args):
    return subprocess.run([sys.executable, "-m", "posekit", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=dict(os.environ, POSEKIT_HOME=str(home)))


def test_benchmark_on_a_small_bop_folder_writes_the_report_and_resumes(tmp_path):
    home = tmp_path / "store"
    data = tmp_path / "bop"
    r = _run(home, "render", "--cad", PART, "--out", data, "--count", "4", "--size", "320x240", "--seed", "3", "--quiet")
    assert r.returncode == 0, r.stderr
    assert _run(home, "train", "templates", "--cad", data / "models" / "obj_000001.ply", "--preset", "tiny",
                "--units", "mm").returncode == 0
    out = tmp_path / "report"
    r = _run(home, "benchmark", "--dataset", data, "--out", out, "--boxes", "gt-obj", "--split", "train_synt")
    assert r.returncode == 0, r.stderr
    summary = (out / "summary.md").read_text()
    assert "| 1 |" in summary and "AR_MSSD" in summary and "Anchors" in summary
    # the command that made it, the machine, errors in degrees and mm, time per target and wall time
    assert f"`posekit benchmark --dataset {data} --out {out} --boxes gt-obj --split train_synt`" in summary
    assert "cores, torch" in summary and "threads" in summary and "Wall time: " in summary
    header = next(ln for ln in summary.splitlines() if ln.startswith("| object"))
    row = next(ln for ln in summary.splitlines() if ln.startswith("| 1 |"))
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")], strict=True))
    rot, trans, per = (float(cells[k]) for k in ("median rot. error (deg)", "median transl. error (mm)",
                                                  "s per target"))
    # the tiny templates on rendered images: tens of degrees at most, a few per cent of the depth, a fraction of a s
    assert 0 <= rot < 60 and 0 <= trans < 100 and 0 < per < 30, cells
    assert float(json.loads((out / "benchmark.json").read_text())["seconds"]["1"]) > 0
    assert (out / "recall_curves.png").is_file() and (out / "sheet_obj_000001.png").is_file()
    report = json.loads((out / "eval.json").read_text())
    assert report["counts"]["targets"] >= 4 and report["counts"]["targets_without_estimate"] == 0
    # the same command again: nothing is estimated anew, the report is the same
    before = (out / "results" / "obj_000001.csv").read_text()
    r = _run(home, "benchmark", "--dataset", data, "--out", out, "--boxes", "gt-obj", "--split", "train_synt")
    assert r.returncode == 0 and "estimates" not in r.stderr.replace("estimate:", "")
    assert (out / "results" / "obj_000001.csv").read_text() == before
    # another setting into the same folder is refused in one line
    r = _run(home, "benchmark", "--dataset", data, "--out", out, "--boxes", "gt-visib", "--split", "train_synt")
    assert r.returncode == 2 and "differs in: boxes" in r.stderr and r.stderr.count("\n") == 1
    # the depth sweep is a stage of the feature search only: one line, nothing written
    r = _run(home, "benchmark", "--dataset", data, "--out", tmp_path / "other", "--depth-sweep")
    assert r.returncode == 2 and "--depth-sweep" in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert not (tmp_path / "other").exists()
