"""stad.engine.curves and the step log: curves.png from fit, series data, NaN, resume, failures that only warn."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_toy import ToyDataset, ToyRegressor, evaluate_mse
from torch.utils.data import DataLoader

from stad.config import TrainConfig
from stad.engine.checkpoint import load_checkpoint
from stad.engine.curves import CurvesWriter, curve_series, draw_curves, plot_curves, smooth
from stad.engine.logging import StepSeries
from stad.engine.train import NonFiniteLossError, fit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _loader(n: int = 32, batch_size: int = 8, **dataset_kwargs) -> DataLoader:
    return DataLoader(ToyDataset(n, **dataset_kwargs), batch_size=batch_size)


def _cfg(tmp_path: Path, name: str, **overrides) -> TrainConfig:
    values = dict(epochs=2, optimizer="adamw", lr=0.02, scheduler="none", output_dir=str(tmp_path / name),
                  log_every=1, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def _history(val: list[dict | None]) -> list[dict]:
    records = []
    for epoch, metrics in enumerate(val, start=1):
        record = {"epoch": epoch, "train": {"loss": 1.0 / epoch, "steps": 4.0}}
        if metrics is not None:
            record["val"] = metrics
        records.append(record)
    return records


def _steps(n: int) -> dict[str, list[float]]:
    return {"step": [float(i) for i in range(1, n + 1)], "mse": [1.0 / i for i in range(1, n + 1)],
            "loss": [2.0 / i for i in range(1, n + 1)], "lr": [0.01] * n}


def _read_png(path: Path) -> np.ndarray:
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    return matplotlib.image.imread(path)


# ---------------------------------------------------------------------------------------------
# The plot


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    history = _history([{"frame_map": 12.5, "video_map": 3.0}, None, {"frame_map": 20.0, "video_map": 7.5}])
    path = plot_curves(history, _steps(12), tmp_path / "sub" / "curves.png", title="run")
    assert path == tmp_path / "sub" / "curves.png"
    image = _read_png(path)
    assert image.shape == (900, 1100, 4)  # figsize 11 x 9 inches at 100 dpi
    assert image[..., :3].std() > 0.05  # not a blank canvas
    assert sorted(p.name for p in path.parent.iterdir()) == ["curves.png"]  # the .tmp file is gone


def test_plotted_data_match_history_and_steps() -> None:
    history = _history([{"frame_map": 12.5, "video_map": 3.0, "name": "x", "flag": True},
                        None,
                        {"frame_map": 20.0, "video_map": 7.5}])
    steps = _steps(12)
    series = curve_series(history, steps)
    assert list(series.losses) == ["loss", "mse"]  # the total first; "step" and "lr" are not losses
    assert series.losses["loss"][1].tolist() == steps["loss"]
    assert series.lr is not None and series.lr[1].tolist() == [0.01] * 12
    assert list(series.val) == ["frame_map", "video_map"]  # strings and booleans left out
    epochs, frame_map = series.val["frame_map"]
    assert epochs.tolist() == [1.0, 3.0] and frame_map.tolist() == [12.5, 20.0]  # validated epochs only
    assert series.epoch_ends.tolist() == [4.0, 8.0, 12.0]
    assert list(series.epoch_losses) == ["loss"] and series.epoch_lr is None  # "steps" is no loss
    assert series.epoch_losses["loss"][1].tolist() == [1.0, 0.5, 1 / 3]

    fig = draw_curves(series)
    ax_loss, ax_lr, ax_val = fig.axes
    assert ax_loss.get_yscale() == "log"  # every loss positive
    assert [line.get_label() for line in ax_val.get_lines()] == ["frame_map", "video_map"]
    assert ax_val.get_lines()[1].get_ydata().tolist() == [3.0, 7.5]
    assert ax_val.get_lines()[1].get_xdata().tolist() == [1.0, 3.0]
    labelled = {line.get_label(): line for line in ax_loss.get_lines() if not line.get_label().startswith("_")}
    assert list(labelled) == ["loss", "mse"]
    raw_total = ax_loss.get_lines()[0]  # faint raw line, then the smoothed one
    assert raw_total.get_alpha() == 0.25 and raw_total.get_ydata().tolist() == steps["loss"]
    assert labelled["loss"].get_ydata() == pytest.approx(smooth(np.array(steps["loss"]), 3))
    epoch_means = ax_loss.get_lines()[4]  # hollow markers at the epoch ends, unlabelled: "loss" has a line
    assert epoch_means.get_marker() == "o" and epoch_means.get_linestyle() == "None"
    assert epoch_means.get_xdata().tolist() == [4.0, 8.0, 12.0] and epoch_means.get_ydata().tolist() == [1.0, 0.5, 1 / 3]
    assert [t.get_text() for t in ax_loss.get_legend().get_texts()] == ["loss", "mse", "epoch mean"]
    assert ax_lr.get_lines()[0].get_ydata().tolist() == [0.01] * 12

    # No logged iteration (log_every longer than an epoch): the epoch means are the loss curve.
    only_epochs = draw_curves(curve_series(history, None)).axes[0]
    assert [t.get_text() for t in only_epochs.get_legend().get_texts()] == ["loss", "epoch mean"]
    assert only_epochs.get_lines()[0].get_ydata().tolist() == [1.0, 0.5, 1 / 3]
    assert ax_loss.get_xlabel() == "iteration (global step)" and ax_val.get_xlabel() == "epoch"


def test_smooth_skips_nan() -> None:
    values = np.array([1.0, np.nan, 3.0, 5.0, np.nan, np.nan, np.nan])
    out = smooth(values, 3)
    assert out[:5].tolist() == [1.0, 2.0, 4.0, 4.0, 5.0]
    assert np.isnan(out[5:]).all()  # windows with no finite value
    assert smooth(values, 1) is not values and np.array_equal(smooth(values, 1), values, equal_nan=True)


def test_nan_inf_zero_and_single_points(tmp_path: Path) -> None:
    steps = {"step": [10.0, 20.0, 30.0], "loss": [1.0, math.nan, math.inf], "lr": [0.0, 0.1, 0.1]}
    history = _history([{"frame_map": math.nan}, {"frame_map": 5.0}])
    series = curve_series(history, steps)
    assert series.losses["loss"][1][:1].tolist() == [1.0] and np.isnan(series.losses["loss"][1][1:]).all()
    assert np.isnan(series.val["frame_map"][1][0]) and series.val["frame_map"][1][1] == 5.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from numpy or matplotlib either
        _read_png(plot_curves(history, steps, tmp_path / "nan.png"))
        fig = draw_curves(series)
        assert fig.axes[0].get_yscale() == "log"  # NaN/inf ignored: the finite values are positive
        assert fig.axes[0].get_lines()[0].get_marker() == "o"  # too few points to smooth: markers

        zero = draw_curves(curve_series([], {"step": [1.0, 2.0], "loss": [0.5, 0.0]}))
        assert zero.axes[0].get_yscale() == "linear"  # a zero loss: no log scale

        one_history, one_steps = _history([{"m": 1.0}]), {"step": [5.0], "loss": [0.3], "lr": [1e-3]}
        _read_png(plot_curves(one_history, one_steps, tmp_path / "one.png"))
        one = curve_series(one_history, one_steps)
        assert one.losses["loss"][1].tolist() == [0.3] and one.val["m"][0].tolist() == [1.0]
        fig = draw_curves(one)
        assert fig.axes[0].get_lines()[0].get_marker() == "o" and fig.axes[2].get_xlim()[0] <= 0.0

        _read_png(plot_curves([], None, tmp_path / "empty.png"))  # nothing yet: placeholders
        empty = draw_curves(curve_series([], None))
        texts = [text.get_text() for ax in empty.axes for text in ax.texts]
        assert texts == ["no logged iterations yet", "no learning rate logged yet", "no validation yet"]
    with pytest.raises(ValueError, match=r"equal length, got lengths \{'step': 2, 'loss': 1\}"):
        curve_series([], {"step": [1.0, 2.0], "loss": [1.0]})


# ---------------------------------------------------------------------------------------------
# The step log


def test_step_series_merges_neighbours_and_round_trips() -> None:
    log = StepSeries(max_points=4)
    for step in range(1, 6):
        log.append(step, {"loss": float(step), "lr": 0.1})
    # 4 points reached -> merged into 2 (stride 2), then step 5 waits as a partial point
    assert log.stride == 2 and len(log) == 3
    assert log.columns() == {"step": [1.5, 3.5, 5.0], "loss": [1.5, 3.5, 5.0], "lr": [0.1, 0.1, 0.1]}

    copy = StepSeries(max_points=4)
    copy.load_state_dict(log.state_dict())
    for series in (log, copy):
        for step in range(6, 12):
            series.append(step, {"loss": float(step), "lr": 0.1, **({"extra": 1.0} if step >= 10 else {})})
    assert copy.columns() == log.columns()
    columns = log.columns()
    assert log.stride == 4
    assert columns["step"] == [2.5, 6.5, 10.0] and columns["loss"] == [2.5, 6.5, 10.0]  # 9..11 pending
    # a name first seen at step 10: NaN before, and its mean skips the missing iterations
    assert math.isnan(columns["extra"][0]) and columns["extra"][2] == 1.0
    with pytest.raises(ValueError, match="'step' is reserved"):
        log.append(12, {"step": 1.0})
    with pytest.raises(ValueError, match="even number >= 2, got 3"):
        StepSeries(max_points=3)


def test_step_series_stays_bounded() -> None:
    log = StepSeries(max_points=100)
    for step in range(1, 10_001):
        log.append(step, {"loss": 1.0})
    assert len(log) < 100 and log.stride == 128
    assert log.columns()["step"][0] == pytest.approx(64.5)  # the first point averages steps 1..128


# ---------------------------------------------------------------------------------------------
# fit


def test_fit_writes_curves_and_resume_continues_them(tmp_path: Path) -> None:
    settings = dict(epochs=2, checkpoint_every=1)
    torch.manual_seed(0)
    full = fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "full", **settings), device="cpu",
               evaluate=evaluate_mse, val_loader=_loader(8, 4, seed=5))
    assert _read_png(tmp_path / "full" / "curves.png").shape == (900, 1100, 4)
    full_log = load_checkpoint(tmp_path / "full" / "last.pt")["extra"]["step_log"]["columns"]
    assert full_log["step"] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert set(full_log) == {"step", "loss", "mse", "l1", "lr"}
    # every iteration logged, equal batches: the epoch means of the log are the history's losses
    for epoch, record in enumerate(full.history):
        assert np.mean(full_log["loss"][4 * epoch:4 * epoch + 4]) == pytest.approx(record["train"]["loss"])
    assert full_log["lr"] == [0.02] * 8

    torch.manual_seed(1)
    resumed = fit(ToyRegressor(), _loader(), device="cpu", evaluate=evaluate_mse, val_loader=_loader(8, 4, seed=5),
                  cfg=_cfg(tmp_path, "resumed", resume=str(tmp_path / "full" / "epoch_0001.pt"), **settings))
    resumed_log = load_checkpoint(tmp_path / "resumed" / "last.pt")["extra"]["step_log"]["columns"]
    assert resumed_log == full_log  # the first epoch's steps came from the checkpoint, bit-identical after
    series = curve_series(resumed.history, resumed_log)
    assert series.losses["loss"][0].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert series.val["val_mse"][1].tolist() == [r["val"]["val_mse"] for r in full.history]
    _read_png(tmp_path / "resumed" / "curves.png")


def test_fit_plots_up_to_a_non_finite_loss(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with pytest.raises(NonFiniteLossError):
        fit(ToyRegressor(), _loader(16, 4, bad_index=9), cfg=_cfg(tmp_path, "nan"), device="cpu")
    _read_png(tmp_path / "nan" / "curves.png")  # the two iterations before the bad batch


def test_plotting_failure_only_warns(tmp_path: Path) -> None:
    (tmp_path / "run" / "curves.png").mkdir(parents=True)  # a folder where the PNG should go
    torch.manual_seed(0)
    with pytest.warns(RuntimeWarning, match=r"could not write the learning curves .*run/curves\.png") as caught:
        result = fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "run", epochs=3), device="cpu")
    assert result.epochs_completed == 3 and (tmp_path / "run" / "last.pt").is_file()
    assert sum("learning curves" in str(w.message) for w in caught) == 1  # once, not every epoch
    assert (tmp_path / "run" / "curves.png").is_dir()


def test_curves_writer_skips_unchanged_data_and_is_off_on_other_ranks(tmp_path: Path) -> None:
    path = tmp_path / "curves.png"
    writer = CurvesWriter(path)
    history, steps = _history([None]), _steps(4)
    assert writer.write(history, steps) and path.is_file()
    path.unlink()
    assert writer.write(history, steps) and not path.exists()  # nothing new: not redrawn
    # new data right after a drawing (< 10 x its time): skipped unless forced
    assert not writer.write(history, _steps(5)) and not path.exists()
    assert writer.write(history, _steps(5), force=True) and path.is_file()
    other_rank = CurvesWriter(tmp_path / "other.png", enabled=False)
    assert not other_rank.write(history, steps) and not (tmp_path / "other.png").exists()


def test_fit_draws_after_every_epoch_and_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    original = CurvesWriter.write

    def spy(self, history, steps, *, force=False):  # noqa: ANN001
        calls.append((len(history), len(steps["step"]), force))
        return original(self, history, steps, force=force)

    monkeypatch.setattr(CurvesWriter, "write", spy)
    torch.manual_seed(0)
    fit(ToyRegressor(), _loader(), cfg=_cfg(tmp_path, "run", epochs=3, log_every=2), device="cpu")
    assert calls == [(1, 2, False), (2, 4, False), (3, 6, False), (3, 6, True)]
    _read_png(tmp_path / "run" / "curves.png")
