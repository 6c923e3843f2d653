"""`posekit eval` and the evaluation pipeline on the real LM-O data: ground truth scores 100 %, known
perturbations give known numbers, misses count, lower-scored duplicates do not, bad rows stop the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from posekit.cli.main import app
from posekit.data.bop import BopDataset, write_targets
from posekit.data.results import write_results
from posekit.data.types import PoseEstimate
from posekit.eval.recall import evaluate


@pytest.fixture(scope="module")
def lmo(lmo_dev):
    return BopDataset(lmo_dev)


def _gt_estimates(ds: BopDataset, targets, dt=(0.0, 0.0, 0.0), score: float = 1.0) -> list[PoseEstimate]:
    """Ground-truth poses of the targets as estimates (translation offset by ``dt`` mm)."""
    out = []
    for t in targets:
        frame = ds.frame("test", t.scene_id, t.im_id)
        for _, g in frame.gts_of(t.obj_id)[: t.inst_count]:
            out.append(PoseEstimate(obj_id=t.obj_id, R=g.R, t=g.t + np.asarray(dt), score=score,
                                    scene_id=t.scene_id, im_id=t.im_id, time=0.5))
    return out


@pytest.fixture(scope="module")
def subset(lmo, tmp_path_factory):
    """The targets of the first four images (a quick stand-in for the 717)."""
    targets = lmo.targets()
    ims = sorted({t.im_id for t in targets})[:4]
    sub = [t for t in targets if t.im_id in ims]
    path = write_targets(tmp_path_factory.mktemp("targets"), sub, name="targets_sub.json")
    return sub, path


def test_ground_truth_scores_100_percent_everywhere(lmo, lmo_dev, tmp_path):
    targets = lmo.targets()
    assert len(targets) == 717
    results = write_results(tmp_path / "gt.csv", _gt_estimates(lmo, targets))
    report = evaluate(lmo_dev, results, adds_all=True, progress=False)
    assert "adds" in report.metrics
    assert sum(report.gt_count.values()) == 717
    for name, m in report.metrics.items():
        assert m.recall == [1.0] * len(m.thresholds), name
        for o in report.obj_ids:
            assert m.recall_per_object[o] == [1.0] * len(m.thresholds), (name, o)
    ar = report.ar()
    assert ar["ar_mssd"] == 1.0 and ar["ar_mspd"] == 1.0
    assert ar["ar_vsd"] is None and ar["ar"] is None and not report.vsd_available  # lmo-dev has no depth
    assert "n/a" in report.vsd_note
    assert report.symmetric == {1: False, 5: False, 6: False, 8: False, 9: False, 10: True, 11: True, 12: False}


def test_five_mm_in_z_gives_known_numbers(lmo, lmo_dev, subset, tmp_path):
    targets, tpath = subset
    results = write_results(tmp_path / "dz.csv", _gt_estimates(lmo, targets, dt=(0.0, 0.0, 5.0)))
    report = evaluate(lmo_dev, results, targets_path=tpath, progress=False)
    for entry in report.per_target:
        e = entry["top_estimate_errors"]
        assert e["te"] == pytest.approx(5.0, abs=1e-9)
        assert e["add"] == pytest.approx(5.0, abs=1e-9)
        assert e["mssd"] == pytest.approx(5.0, abs=1e-9)
        assert e["re"] == pytest.approx(0.0, abs=1e-5)
    assert report.metrics["5cm5deg"].recall == [1.0]
    # ape: diameter 102.1 mm, so 0.02 d = 2.04 mm < 5 mm < 0.05 d = 5.1 mm.
    assert report.metrics["add"].recall_per_object[1] == [0.0, 1.0, 1.0]
    # MSSD 5 mm: below 0.05 d for every object (the smallest diameter is 102 mm).
    assert report.metrics["mssd"].recall == [1.0] * 10


def test_missing_estimate_lowers_recall_and_lower_duplicate_does_not(lmo, lmo_dev, subset, tmp_path):
    targets, tpath = subset
    ests = _gt_estimates(lmo, targets, score=0.9)
    n = len(targets)
    full = evaluate(lmo_dev, write_results(tmp_path / "full.csv", ests), targets_path=tpath, progress=False)
    assert full.metrics["mssd"].recall[0] == 1.0

    missing = evaluate(lmo_dev, write_results(tmp_path / "miss.csv", ests[1:]), targets_path=tpath, progress=False)
    assert missing.metrics["mssd"].recall[0] == pytest.approx((n - 1) / n)
    assert missing.metrics["add_s"].recall[2] == pytest.approx((n - 1) / n)
    first = ests[0].obj_id
    assert missing.metrics["mssd"].recall_per_object[first][0] < 1.0

    bad = PoseEstimate(obj_id=ests[0].obj_id, R=ests[0].R, t=ests[0].t + 300.0, score=0.5,
                       scene_id=ests[0].scene_id, im_id=ests[0].im_id)
    dup = evaluate(lmo_dev, write_results(tmp_path / "dup.csv", ests + [bad]), targets_path=tpath, progress=False)
    for name in full.metrics:
        assert dup.metrics[name].recall == full.metrics[name].recall, name
    assert dup.n_estimates_evaluated == n and dup.n_estimates == n + 1
    # The same wrong pose with a higher score replaces the right one (top inst_count by score).
    bad.score = 0.95
    top = evaluate(lmo_dev, write_results(tmp_path / "top.csv", ests + [bad]), targets_path=tpath, progress=False)
    assert top.metrics["mssd"].recall[0] == pytest.approx((n - 1) / n)


def test_cli_table_json_and_plot(lmo, lmo_dev, subset, tmp_path):
    targets, tpath = subset
    results = write_results(tmp_path / "r.csv", _gt_estimates(lmo, targets, dt=(0.0, 0.0, 5.0)))
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["eval", "--dataset", str(lmo_dev), "--results", str(results),
                                   "--targets", str(tpath), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    assert "1 ape" in res.output and "mean (objects)" in res.output and "AR_MSSD" in res.output
    assert "VSD: n/a" in res.output
    report = json.loads((out / "eval.json").read_text())
    assert report["counts"]["targets"] == len(targets)
    assert report["bop19"]["ar_vsd"] is None and report["bop19"]["ar_mssd"] == 1.0
    assert report["metrics"]["add"]["recall_per_object"]["1"] == [0.0, 1.0, 1.0]
    from PIL import Image

    with Image.open(out / "recall_curves.png") as im:
        assert im.size[0] > 600 and im.size[1] > 200


def test_cli_bad_row_stops_with_line_number_unless_skipped(lmo, lmo_dev, subset, tmp_path):
    targets, tpath = subset
    results = write_results(tmp_path / "r.csv", _gt_estimates(lmo, targets))
    lines = results.read_text().splitlines()
    lines.insert(3, "2,3,1,1.0,1 0 0 0 1 0 0 0,0 0 500,-1")  # R with 8 numbers, on line 4
    results.write_text("\n".join(lines) + "\n")
    args = ["eval", "--dataset", str(lmo_dev), "--results", str(results), "--targets", str(tpath), "--quiet"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "line 4" in err[0] and "r.csv" in err[0]
    assert not results.with_suffix(".eval.json").exists()

    res = CliRunner().invoke(app, args + ["--skip-bad-rows"])
    assert res.exit_code == 0, res.output
    assert "bad rows skipped: 1" in res.output
    report = json.loads(results.with_suffix(".eval.json").read_text())
    assert report["counts"]["bad_rows_skipped"] == 1
    assert report["bop19"]["ar_mssd"] == 1.0


def test_objects_limit_the_means_and_missing_estimates_are_counted(lmo, lmo_dev, subset, tmp_path):
    targets, tpath = subset
    cats = [t for t in targets if t.obj_id == 6]
    results = write_results(tmp_path / "cat.csv", _gt_estimates(lmo, cats[1:]))  # one cat target without estimate
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["eval", "--dataset", str(lmo_dev), "--results", str(results), "--targets",
                                   str(tpath), "--objects", "6", "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    report = json.loads((out / "eval.json").read_text())
    assert report["counts"]["targets"] == len(cats) and list(report["objects"]) == ["6"]
    assert report["counts"]["targets_without_estimate"] == 1
    assert report["bop19"]["ar_mssd"] == pytest.approx((len(cats) - 1) / len(cats))
    assert "1 had no estimate" in res.output
    # AR values print as fractions, as the README and BOP give them (a recall row stays in %)
    cat_row = next(line for line in res.output.splitlines() if line.startswith("6 cat"))
    assert f"{(len(cats) - 1) / len(cats):.3f}" in cat_row


def test_bad_outputs_and_empty_results_are_refused_before_the_work(lmo, lmo_dev, subset, tmp_path):
    targets, tpath = subset
    results = write_results(tmp_path / "r.csv", _gt_estimates(lmo, targets))
    a_file = tmp_path / "taken"
    a_file.write_text("x")
    empty = tmp_path / "empty.csv"
    empty.write_text("scene_id,im_id,obj_id,score,R,t,time\n")
    for args, needle in [(["--results", str(results), "--out", str(a_file)], "not a folder"),
                         (["--results", str(results), "--out", str(tmp_path / "no" / "dir")], "does not exist"),
                         (["--results", str(empty)], "holds no estimates"),
                         (["--results", str(results), "--objects", "3"], "no targets of such objects")]:
        res = CliRunner().invoke(app, ["eval", "--dataset", str(lmo_dev), "--targets", str(tpath), "--quiet", *args])
        assert res.exit_code == 2, (args, res.output)
        assert needle in res.stderr and "Traceback" not in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert a_file.read_text() == "x"
