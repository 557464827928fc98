"""Learning curves of a training run as one PNG (``curves.png`` in the run folder, beside ``tb/``).

A picture a person can open without TensorBoard. Three panels, drawn on matplotlib's Agg canvas
(no pyplot, so no global backend switch and no figure registry)::

    losses per logged iteration    every loss entry and the total "loss": faint raw line + smoothed
                                   line; log-scale y when every value is positive
    learning rate per iteration    (of the first parameter group, as logged)
    validation metrics per epoch   every metric that is a plain number, as ``evaluate`` returned it
                                   (mAP-like metrics in percent when they come in percent)

Faint vertical lines on the two iteration panels mark the ends of epochs, and hollow markers the
epochs' mean losses and final learning rate from the history (up to 50 epochs; beyond that,
markers only for names that no logged iteration has, e.g. when ``log_every`` is longer than an
epoch). Legends sit to the right of the panels. The inputs are plain data, so a finished or
resumed run can be re-plotted from its checkpoint::

    history   FitResult.history or checkpoint["extra"]["history"]:
              [{"epoch": n, "train": {..., "steps": iterations}, "val": {...}}, ...]
    steps     StepSeries.columns() or checkpoint["extra"]["step_log"]["columns"]:
              {"step": [P global steps], "loss": [P], <loss name>: [P], "lr": [P]}

NaN and inf are gaps (never an error); a single point is drawn as a marker; a panel without data
says so. ``fit`` writes the file through :class:`CurvesWriter`, whose failures only warn.
"""

from __future__ import annotations

import math
import numbers
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CurveSeries", "CurvesWriter", "curve_series", "draw_curves", "plot_curves", "smooth"]

NOT_LOSSES = ("step", "epoch", "lr", "clips_per_s", "grad_norm", "steps")  # entries that are not loss entries
_RAW_ALONE = 8  # series with fewer points are drawn raw with markers, not smoothed
_MAX_EPOCH_LINES = 50  # more epochs: no epoch lines on the iteration panels (they would grey the panel)


@dataclass
class CurveSeries:
    """The data of the three panels (what :func:`draw_curves` draws).

    Attributes:
        losses: loss name -> ``(steps [P], values [P])`` per logged iteration; the total ``"loss"`` first.
        lr: ``(steps [P], lr [P])`` per logged iteration, or None when none was logged.
        epoch_losses: loss name -> ``(epoch-end steps [N], epoch means [N])`` from the history's ``train``
            (drawn as hollow markers; the only loss data when no iteration was logged, e.g. ``log_every``
            larger than an epoch or a checkpoint from before the step log).
        epoch_lr: ``(epoch-end steps [N], lr [N])`` from the history's ``train``, or None.
        val: metric name -> ``(epochs [E], values [E])`` over the validated epochs; NaN where missing.
        epoch_ends: global steps at which epochs ended ``[N]`` (empty when the history has no step counts).

    Non-finite values are NaN everywhere.
    """

    losses: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    lr: tuple[np.ndarray, np.ndarray] | None = None
    epoch_losses: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    epoch_lr: tuple[np.ndarray, np.ndarray] | None = None
    val: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    epoch_ends: np.ndarray = field(default_factory=lambda: np.zeros(0))


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _finite_or_nan(values: Sequence[Any]) -> np.ndarray:
    array = np.asarray([float(v) if _is_number(v) else math.nan for v in values], dtype=np.float64)
    array[~np.isfinite(array)] = np.nan
    return array


def _loss_names(names: Sequence[str]) -> list[str]:
    """The loss entries among ``names``: the total ``"loss"`` first, the parts in their order."""
    return sorted((name for name in names if name not in NOT_LOSSES), key=lambda name: name != "loss")


def curve_series(history: Sequence[Mapping[str, Any]], steps: Mapping[str, Sequence[float]] | None) -> CurveSeries:
    """Turn ``fit``'s history and the per-step columns into the panels' series (no drawing).

    Args:
        history: one record per epoch, ``{"epoch": n, "train": {..., "steps": iterations}, "val": {...}}``;
            ``val`` may be missing (not validated that epoch); non-numbers in ``val`` are left out.
        steps: ``{"step": [P], name: [P], ...}`` equal-length columns (``StepSeries.columns()``), or None.

    Returns:
        :class:`CurveSeries`.

    Raises:
        ValueError: ``steps`` has no ``"step"`` column or columns of different lengths.
    """
    series = CurveSeries()
    steps = dict(steps or {})
    if steps:
        lengths = {name: len(values) for name, values in steps.items()}
        if "step" not in steps or len(set(lengths.values())) != 1:
            raise ValueError(f"steps must hold a 'step' column and columns of equal length, got lengths {lengths}")
        x = _finite_or_nan(steps["step"])
        series.losses = {name: (x, _finite_or_nan(steps[name])) for name in _loss_names(list(steps))}
        if "lr" in steps:
            series.lr = (x, _finite_or_nan(steps["lr"]))

    trains = [record.get("train") if isinstance(record.get("train"), Mapping) else {} for record in history]
    counts = [train.get("steps") for train in trains]
    if counts and all(_is_number(c) for c in counts):
        series.epoch_ends = ends = np.cumsum(np.asarray(counts, dtype=np.float64))
        names = dict.fromkeys(name for train in trains for name, v in train.items() if _is_number(v))
        series.epoch_losses = {name: (ends, _finite_or_nan([train.get(name) for train in trains]))
                               for name in _loss_names(list(names))}
        if "lr" in names:
            series.epoch_lr = (ends, _finite_or_nan([train.get("lr") for train in trains]))

    validated = [record for record in history if isinstance(record.get("val"), Mapping)]
    metric_names = dict.fromkeys(name for record in validated for name, v in record["val"].items() if _is_number(v))
    epochs = _finite_or_nan([record.get("epoch", math.nan) for record in validated])
    series.val = {name: (epochs, _finite_or_nan([record["val"].get(name) for record in validated]))
                  for name in metric_names}
    return series


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over ``window`` points that skips NaN (all-NaN windows give NaN).

    Args:
        values: ``[P]``.
        window: points per average (an even number is rounded up to the next odd one).

    Returns:
        ``[P]`` smoothed values.
    """
    values = np.asarray(values, dtype=np.float64)
    if window <= 1 or values.size == 0:
        return values.copy()
    half = window // 2
    finite = np.isfinite(values)
    kernel = np.ones(2 * half + 1)
    sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _has_finite(arrays: Sequence[np.ndarray]) -> bool:
    return any(np.isfinite(a).any() for a in arrays)


def _positive(arrays: Sequence[np.ndarray]) -> bool:
    """True when there is at least one finite value and every finite value is > 0."""
    return _has_finite(arrays) and all(bool((a[np.isfinite(a)] > 0).all()) for a in arrays)


def _placeholder(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


def _legend(ax: Any, entries: int, *, extra: list[Any] | None = None) -> None:
    """Legend outside the panel, on the right (a second column from 17 entries on)."""
    handles, labels = ax.get_legend_handles_labels()
    for handle in extra or []:
        handles.append(handle)
        labels.append(handle.get_label())
    ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize=7 if entries <= 12 else 6, ncol=1 + (entries - 1) // 16, handlelength=1.5, frameon=False)


def _draw_per_step(ax: Any, x: np.ndarray, y: np.ndarray, *, color: str, label: str | None, width: float) -> None:
    """Faint raw line + smoothed line, or raw with markers when there are few points."""
    if np.isfinite(y).sum() < _RAW_ALONE:
        ax.plot(x, y, color=color, marker="o", markersize=3, linewidth=1, label=label)
        return
    ax.plot(x, y, color=color, alpha=0.25, linewidth=0.8)
    ax.plot(x, smooth(y, max(3, len(y) // 40)), color=color, linewidth=width, label=label)


def _plain_log_formatter(**kwargs: Any) -> Any:
    """matplotlib's ``LogFormatter`` (which ticks get a label) writing ``f"{value:g}"`` (0.6, 1, 20, 1e-05)."""
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):
        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    return PlainLogFormatter(**kwargs)


def draw_curves(series: CurveSeries, *, title: str = "") -> "Figure":
    """The three-panel figure of ``series`` (Agg canvas; nothing is shown or saved).

    Args:
        series: from :func:`curve_series`.
        title: figure title (e.g. the run folder's name).

    Returns:
        A ``matplotlib.figure.Figure`` of 1100 x 900 pixels; its axes are losses, learning rate,
        validation, each with its legend on the right.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(11, 9), dpi=100)
    FigureCanvasAgg(fig)
    # Fixed margins: constrained/tight layout would double the drawing time (measured).
    fig.subplots_adjust(left=0.08, right=0.74, bottom=0.06, top=0.95 if title else 0.97, hspace=0.35)
    ax_loss, ax_lr, ax_val = fig.subplots(3, 1)
    ax_lr.sharex(ax_loss)
    if title:
        fig.suptitle(title)
    epoch_marker = dict(marker="o", markersize=4, markerfacecolor="white", linestyle="none")
    epoch_handle = Line2D([], [], color="0.3", label="epoch mean", **epoch_marker)

    # Losses: one colour per name (the total in black), per-step lines and epoch means.
    names = list(dict.fromkeys([*series.losses, *series.epoch_losses]))
    colors = {name: "black" if name == "loss" else f"C{i % 10}" for i, name in enumerate(names)}
    for name, (x, y) in series.losses.items():
        _draw_per_step(ax_loss, x, y, color=colors[name], label=name, width=1.6 if name == "loss" else 1.2)
    few_epochs = len(series.epoch_ends) <= _MAX_EPOCH_LINES  # else epoch means only where no iteration was logged
    epoch_losses = {name: xy for name, xy in series.epoch_losses.items() if few_epochs or name not in series.losses}
    for name, (x, y) in epoch_losses.items():
        ax_loss.plot(x, y, color=colors[name], label=None if name in series.losses else name, **epoch_marker)
    loss_arrays = [y for _, y in [*series.losses.values(), *epoch_losses.values()]]
    if not names:
        _placeholder(ax_loss, "no logged iterations yet")
    else:
        if _positive(loss_arrays):
            ax_loss.set_yscale("log")
            ax_loss.yaxis.set_major_formatter(_plain_log_formatter(labelOnlyBase=False))  # "0.6", not "6e-01"
            ax_loss.yaxis.set_minor_formatter(_plain_log_formatter(labelOnlyBase=False, minor_thresholds=(1, 0.4)))
        elif not _has_finite(loss_arrays):
            _placeholder(ax_loss, "no finite loss values")
        _legend(ax_loss, len(names) + bool(epoch_losses), extra=[epoch_handle] if epoch_losses else [])
    ax_loss.set_ylabel("loss")
    ax_loss.set_xlabel("iteration (global step)")

    # Learning rate.
    if series.lr is not None:
        x, y = series.lr  # a schedule: nothing to smooth
        ax_lr.plot(x, y, color="C0", linewidth=1.2, marker="o" if np.isfinite(y).sum() < _RAW_ALONE else None,
                   markersize=3)
    if series.epoch_lr is not None and (few_epochs or series.lr is None):
        ax_lr.plot(*series.epoch_lr, color="C0", **epoch_marker)
    if series.lr is None and series.epoch_lr is None:
        _placeholder(ax_lr, "no learning rate logged yet")
    else:
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3), useOffset=False)  # 1e-3, not 0.00100
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("iteration (global step)")

    if len(series.epoch_ends) and few_epochs:
        for ax in (ax_loss, ax_lr):
            transform = ax.get_xaxis_transform()  # x in data, y in axes fraction
            ax.vlines(series.epoch_ends, 0, 1, transform=transform, colors="0.85", linewidths=0.6, zorder=0)

    # Validation: colours x line styles tell up to 30 metrics apart.
    for index, (name, (epochs, values)) in enumerate(series.val.items()):
        ax_val.plot(epochs, values, color=f"C{index % 10}", linestyle=("-", "--", ":")[index // 10 % 3],
                    marker="o", markersize=3, linewidth=1.2, label=name)
    if series.val:
        _legend(ax_val, len(series.val))
        ax_val.xaxis.set_major_locator(MaxNLocator(integer=True))
        epochs = next(iter(series.val.values()))[0]
        if np.isfinite(epochs).any() and np.nanmax(epochs) - np.nanmin(epochs) < 2:  # 1-2 epochs: whole ticks
            ax_val.set_xlim(np.nanmin(epochs) - 1, np.nanmax(epochs) + 1)
    else:
        _placeholder(ax_val, "no validation yet")
    ax_val.set_ylabel("validation")
    ax_val.set_xlabel("epoch")
    for ax in (ax_loss, ax_lr, ax_val):
        ax.grid(True, alpha=0.3)
    return fig


def plot_curves(
    history: Sequence[Mapping[str, Any]],
    steps: Mapping[str, Sequence[float]] | None,
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Write the learning curves of ``history`` and ``steps`` (formats in the module docstring) as a PNG.

    The file is written to ``<path>.tmp`` first and then renamed, so a viewer never sees half a file.

    Args:
        history: ``fit``'s per-epoch records.
        steps: per-logged-iteration columns, or None.
        path: the PNG to write (its folder is created).
        title: figure title.

    Returns:
        ``path``.
    """
    path = Path(path)
    fig = draw_curves(curve_series(history, steps), title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 1})  # fast zlib: ~1/3 of the time
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class CurvesWriter:
    """:func:`plot_curves` for the training loop: a failure warns once (naming the file) and never raises.

    Drawing takes about 0.4 s (1100 x 900 px, one CPU core; the first call also imports matplotlib). So that very short epochs
    (tests, toy runs) do not spend their time plotting, a write that is not forced is skipped while
    less than ``10 x`` the last drawing time has passed since it: plots cost at most about 10 % of
    the run, and real epochs (minutes) are all drawn. A write whose data are those of the last file
    (as many epochs and logged steps, same last step) is skipped too.

    Args:
        path: the PNG (``<output_dir>/curves.png``).
        enabled: False on ranks > 0: :meth:`write` does nothing.
        title: figure title.
    """

    def __init__(self, path: str | Path, *, enabled: bool = True, title: str = "") -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.title = title
        self.failed = False
        self._written: tuple[int, int, float] | None = None  # (epochs, step points, last step) of the file
        self._last_end = -math.inf  # time.perf_counter() when the last drawing ended
        self._last_seconds = 0.0  # how long it took

    def write(
        self,
        history: Sequence[Mapping[str, Any]],
        steps: Mapping[str, Sequence[float]] | None,
        *,
        force: bool = False,
    ) -> bool:
        """Plot now (unless skipped, see the class); True when the file is up to date with the data.

        Args:
            history: ``fit``'s per-epoch records.
            steps: per-logged-iteration columns, or None.
            force: draw even if the last drawing was very recent (``fit``'s final call).
        """
        if not self.enabled:
            return False
        x = list((steps or {}).get("step", []))
        signature = (len(history), len(x), float(x[-1]) if x else math.nan)
        if self._written is not None and repr(signature) == repr(self._written):  # repr: NaN == NaN
            return True
        if not force and time.perf_counter() - self._last_end < 10 * self._last_seconds:
            return False
        start = time.perf_counter()
        try:
            plot_curves(history, steps, self.path, title=self.title)
        except Exception as exc:  # noqa: BLE001 - a plot must never stop training
            if not self.failed:
                warnings.warn(f"could not write the learning curves {self.path}: {type(exc).__name__}: {exc}; "
                              f"training goes on without them", RuntimeWarning, stacklevel=2)
            self.failed = True
            return False
        finally:
            self._last_end = time.perf_counter()
            self._last_seconds = self._last_end - start
        self._written = signature
        return True
