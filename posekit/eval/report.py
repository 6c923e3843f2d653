"""Reports of an evaluation: a plain-text per-object table, a JSON file with everything, a PNG of curves.

All files are written atomically (temp file + os.replace), so an interrupted run leaves none half-written.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from posekit.data.jsonio import save_image_atomic, write_text_atomic
from posekit.eval.recall import EvalReport

OBJECT_NAMES_LM = {
    1: "ape", 2: "benchvise", 3: "bowl", 4: "camera", 5: "can", 6: "cat", 7: "cup", 8: "driller", 9: "duck",
    10: "eggbox", 11: "glue", 12: "holepuncher", 13: "iron", 14: "lamp", 15: "phone",
}


def _pct(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100.0 * v:.1f}"


def _frac(v: float | None) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


#: how each column is printed: recalls in %, average recalls (AR) as fractions (as BOP reports them)
_FORMATS = [_pct] * 5 + [_frac] * 4


def _cells(values: list[float | None]) -> list[str]:
    return [f(v) for f, v in zip(_FORMATS, values, strict=True)]


def _row_values(report: EvalReport, obj_id: int | None) -> list[float | None]:
    """Table values of one object (or all targets pooled when ``obj_id`` is None)."""
    def rec(name: str, i: int) -> float | None:
        m = report.metrics.get(name)
        if m is None:
            return None
        return m.recall[i] if obj_id is None else m.recall_per_object[obj_id][i]

    ar = report.ar(obj_id)
    return [rec("add_s", 0), rec("add_s", 1), rec("add_s", 2), rec("proj", 0), rec("5cm5deg", 0),
            ar["ar_mssd"], ar["ar_mspd"], ar["ar_vsd"], ar["ar"]]


COLUMNS = ["ADD(-S) .02d", ".05d", ".1d", "Proj 5px", "5cm 5deg", "AR_MSSD", "AR_MSPD", "AR_VSD", "AR"]


def format_table(report: EvalReport, dataset_name: str = "") -> str:
    """A readable aligned table (recalls in %): one row per object, the mean over objects, all targets."""
    names = OBJECT_NAMES_LM if "lm" in dataset_name.lower() else {}
    rows: list[list[str]] = []
    for o in report.obj_ids:
        label = f"{o} {names.get(o, '')}".strip() + (" *" if report.symmetric.get(o) else "")
        rows.append([label, str(report.gt_count.get(o, 0))] + _cells(_row_values(report, o)))
    per_obj = np.array([[np.nan if v is None else v for v in _row_values(report, o)] for o in report.obj_ids])
    means = [None if np.all(np.isnan(col)) else float(np.nanmean(col)) for col in per_obj.T] if len(per_obj) else []
    rows.append(["mean (objects)", str(sum(report.gt_count.values()))] + (_cells(means) if means else []))
    rows.append(["all targets", str(sum(report.gt_count.values()))] + _cells(_row_values(report, None)))
    header = ["object", "targets"] + COLUMNS
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    out = [line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in rows[:-2]]
    out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in rows[-2:]]
    notes = [
        "recall in %, AR as fractions (0-1); * = symmetric object (ADD-S, MSSD/MSPD over its symmetries); d = diameter",
        f"VSD: {report.vsd_note}",
        f"estimates: {report.n_estimates} read, {report.n_estimates_evaluated} evaluated "
        f"(top inst_count per target), {report.n_estimates_ignored} for non-targets ignored",
        f"targets: {report.n_targets} of objects {', '.join(map(str, report.obj_ids))}; "
        f"{report.n_targets_without_estimate} had no estimate (counted as misses)",
    ]
    if report.n_bad_rows:
        notes.append(f"bad rows skipped: {report.n_bad_rows} (first: {report.bad_rows[0]})")
    return "\n".join(out + [""] + notes)


def report_to_dict(report: EvalReport) -> dict:
    """Everything in the report as JSON-ready data (NaN -> null)."""
    def clean(v):
        if isinstance(v, float) and math.isnan(v):
            return None
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if isinstance(v, np.generic):
            return clean(v.item())
        return v

    def metric(m):
        return {"label": m.label, "unit": m.unit, "thresholds": m.thresholds, "recall": m.recall,
                "mean_recall": m.mean_recall, "recall_per_object": m.recall_per_object,
                "mean_recall_per_object": {o: m.object_mean(o) for o in m.recall_per_object}}

    out = {
        "settings": report.settings,
        "counts": {
            "targets": report.n_targets,
            "valid_gt_per_object": report.gt_count,
            "valid_gt_total": sum(report.gt_count.values()),
            "estimates_read": report.n_estimates,
            "estimates_evaluated": report.n_estimates_evaluated,
            "estimates_ignored_non_target": report.n_estimates_ignored,
            "targets_without_estimate": report.n_targets_without_estimate,
            "bad_rows_skipped": report.n_bad_rows,
            "bad_rows_first": report.bad_rows,
        },
        "objects": {o: {"symmetric": report.symmetric[o], **report.ar(o)} for o in report.obj_ids},
        "bop19": {**report.ar(None), "vsd": report.vsd_note},
        "metrics": {k: metric(m) for k, m in report.metrics.items()},
        "curves": {k: metric(m) for k, m in report.curves.items()},
        "per_target": report.per_target,
        "seconds": report.seconds,
    }
    return clean(out)


def write_json(report: EvalReport, path: str | Path) -> Path:
    """Write the JSON report atomically."""
    import json

    return write_text_atomic(path, json.dumps(report_to_dict(report), indent=1) + "\n")


def plot_curves(report: EvalReport, path: str | Path, dataset_name: str = "") -> Path:
    """PNG of recall versus threshold (ADD(-S), 2D projection, MSPD), one line per object, all targets bold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = OBJECT_NAMES_LM if "lm" in dataset_name.lower() else {}
    fig = Figure(figsize=(15, 4.6), dpi=100)
    canvas = FigureCanvasAgg(fig)  # Agg, headless: no pyplot state, no display needed
    axes = fig.subplots(1, 3)
    xlabels = {"add_s": "threshold (x object diameter)", "proj": "threshold (px)", "mspd": "threshold (px at 640 px width)"}
    for ax, key in zip(axes, ("add_s", "proj", "mspd"), strict=True):
        curve = report.curves[key]
        x = [t[0] for t in curve.thresholds]
        for o in report.obj_ids:
            ax.plot(x, 100.0 * np.asarray(curve.recall_per_object[o]), lw=1.2,
                    label=f"{o} {names.get(o, '')}".strip())
        ax.plot(x, 100.0 * np.asarray(curve.recall), color="black", lw=2.5, label="all targets")
        ax.set_title(f"{curve.label} recall")
        ax.set_xlabel(xlabels[key])
        ax.set_ylabel("recall (%)")
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.3)
    axes[-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    canvas.draw()
    image = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    return save_image_atomic(path, image)
