"""How far a pose's `score` tells whether it is right: score against ADD(-S) error on a BOP dataset.

    posekit estimate --dataset ../shared/data/lmo-dev --model-dir TEMPLATES_DIR --boxes gt-obj --out results.csv
    python benchmarks/score.py --dataset ../shared/data/lmo-dev --results results.csv

Prints, per score bin, the estimates in it, the share that is correct (ADD(-S) < 0.1 diameter), the share whose
rotation is grossly wrong (over 30 degrees, the least over the object's symmetries) and their median ADD(-S)
error; then, for candidate thresholds, the share of all estimates below it, the share of the correct ones below it
(what marking them unreliable would cost), and the shares correct and grossly wrong below and above it.
This is how ``posekit.estimate.pipeline.RELIABLE_SCORE`` was chosen (docs/estimate.md, "What score means").
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    from posekit.benchmark import _errors, pose_errors
    from posekit.data.bop import BopDataset
    from posekit.data.results import read_results

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--results", required=True)
    ap.add_argument("--split", default="test")
    args = ap.parse_args()
    ds = BopDataset(args.dataset)
    ests, _ = read_results(args.results)
    rows = []
    for obj_id in sorted({e.obj_id for e in ests}):
        errs = _errors(ds, [e for e in ests if e.obj_id == obj_id], obj_id, args.split)
        rot, _ = pose_errors(ds, errs, obj_id)
        rows += [(float(e.score), err, r) for (err, e, _), r in zip(errs, rot, strict=True)]
    score, err, rot = np.array(rows).T
    ok, gross = err < 0.1, rot > 30.0
    print(f"{len(rows)} estimates, {100 * ok.mean():.1f} % correct (ADD(-S) < 0.1 d); score quartiles "
          f"{', '.join(f'{q:.3f}' for q in np.quantile(score, [0.25, 0.5, 0.75]))}")
    edges = np.quantile(score, np.linspace(0, 1, 11))
    print("\n| score | estimates | correct | rotation > 30 deg | median ADD(-S) (d) |\n|---|---|---|---|---|")
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        m = (score >= lo) & (score <= hi)
        print(f"| {lo:.3f}-{hi:.3f} | {m.sum()} | {100 * ok[m].mean():.1f} % | {100 * gross[m].mean():.1f} % | "
              f"{np.median(err[m]):.2f} |")
    print("\n| threshold | estimates below | correct ones below | correct below / above | rotation > 30 deg below / "
          "above |\n|---|---|---|---|---|")
    for th in np.round(np.arange(0.20, 0.75, 0.05), 2):
        below = score < th
        if not below.any() or below.all():
            continue
        print(f"| {th:.2f} | {100 * below.mean():.1f} % | {100 * (ok & below).sum() / max(ok.sum(), 1):.1f} % | "
              f"{100 * ok[below].mean():.1f} % / {100 * ok[~below].mean():.1f} % | "
              f"{100 * gross[below].mean():.1f} % / {100 * gross[~below].mean():.1f} % |")


if __name__ == "__main__":
    main()
