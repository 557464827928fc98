"""Readable reports of evaluation results: text/Markdown tables and PNG plots (matplotlib, Agg backend).

Values are printed in percent with two decimals, as the ACT/MOC papers and logs print them.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from stad.eval.ap import PRCurve
from stad.eval.frame_map import FrameMAPResult
from stad.eval.video_map import VideoMAPResult


def _pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{100 * x:.2f}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, markdown: bool = False) -> str:
    """Align ``rows`` under ``headers`` (first column left-aligned, the others right-aligned)."""
    cells = [list(map(str, headers))] + [list(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        parts = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        return ("| " + " | ".join(parts) + " |") if markdown else "  ".join(parts)

    out = [line(cells[0])]
    if markdown:
        out.append("|" + "|".join([":" + "-" * (widths[0] + 1)] + ["-" * (w + 1) + ":" for w in widths[1:]]) + "|")
    else:
        out.append("  ".join("-" * w for w in widths))
    out += [line(r) for r in cells[1:]]
    return "\n".join(out)


def frame_map_table(result: FrameMAPResult, *, markdown: bool = False) -> str:
    """Per-class AP, counts and the mAP line of a frame-mAP result."""
    rows = [
        [name, _pct(ap), str(result.counts[name].n_gt), str(result.counts[name].n_det), str(result.counts[name].n_tp)]
        for name, ap in result.per_class.items()
    ]
    rows.append(["mAP", _pct(result.mAP), "", "", ""])
    title = f"frame-mAP@{result.iou:g} ({result.protocol} protocol)"
    return title + "\n" + format_table(["label", "AP (%)", "GT", "dets", "TP"], rows, markdown=markdown)


def video_map_table(result: VideoMAPResult, *, markdown: bool = False) -> str:
    """Per-class AP at every threshold, and the mAP line of a video-mAP result."""
    names = list(result.mAP)
    labels = list(next(iter(result.per_class.values()), {}))
    rows = [[label] + [_pct(result.per_class[t][label]) for t in names] for label in labels]
    rows.append(["mAP"] + [_pct(result.mAP[t]) for t in names])
    title = f"video-mAP (ACT protocol, tube NMS {result.nms:g})"
    return title + "\n" + format_table(["label"] + [f"@{t}" for t in names], rows, markdown=markdown)


def plot_pr_curves(curves: dict[str, PRCurve], path: str | Path, *, title: str = "", per_class_ap: dict[str, float] | None = None) -> Path:
    """One PNG with the precision/recall curve of every class (legend: class and AP).

    Args:
        curves: label -> curve.
        path: output PNG.
        title: figure title.
        per_class_ap: label -> AP for the legend.

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    for name, curve in curves.items():
        if curve.recall.size == 0:
            continue
        label = name if per_class_ap is None else f"{name} ({_pct(per_class_ap.get(name))})"
        ax.plot(curve.recall, curve.precision, linewidth=1, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    if len(curves) <= 30 and ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="lower left", ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_per_class_ap(per_class: dict[str, float], path: str | Path, *, title: str = "") -> Path:
    """Horizontal bar chart of per-class AP (NaN drawn as 0 and marked "-")."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    names = list(per_class)
    values = [100 * v if math.isfinite(v) else 0.0 for v in per_class.values()]
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.22 * len(names) + 1)))
    ax.barh(range(len(names)), values)
    ax.set_yticks(range(len(names)), labels=[n if math.isfinite(per_class[n]) else f"{n} (-)" for n in names], fontsize=6)
    ax.invert_yaxis()
    ax.set_xlabel("AP (%)")
    ax.set_xlim(0, 100)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def json_clean(obj: Any) -> Any:
    """Non-finite floats -> None (JSON has no NaN), recursively through dicts, lists and tuples."""
    if isinstance(obj, dict):
        return {k: json_clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
