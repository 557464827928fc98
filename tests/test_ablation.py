"""benchmarks/ablation.py: spec checking, the stored --set overrides and the table (no training here)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ablation():
    spec = importlib.util.spec_from_file_location("stad_benchmarks_ablation", ROOT / "benchmarks" / "ablation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the file executes
    spec.loader.exec_module(module)
    return module


ablation = _ablation()


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title: x\n", "non-empty 'variants' list"),
        ("variants: [{name: a}]\n", "variants[0]: each variant needs 'name' and 'config'"),
        ("variants: [{name: a, config: c.yaml, epochs: 3}]\n", "variants[0] (a): unknown key(s) ['epochs']"),
        ("variants: [{name: a, config: c.yaml, train: false}]\n", "train: false needs 'checkpoint'"),
        ("variants: [{name: a, config: c.yaml}, {name: a, config: d.yaml}]\n", "duplicate variant name(s) ['a']"),
        ("variant: []\nvariants: [{name: a, config: c.yaml}]\n", "unknown key(s) ['variant']"),
    ],
)
def test_bad_specs_name_the_file_and_entry(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path / "spec.yaml", text)
    with pytest.raises(SystemExit) as err:
        ablation.load_spec(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_every_shipped_spec_loads_and_names_existing_configs() -> None:
    specs = sorted((ROOT / "benchmarks" / "ablations").glob("*.yaml"))
    assert specs
    for path in specs:
        spec = ablation.load_spec(path)
        for variant in spec.variants:
            assert (ROOT / variant.config).is_file(), f"{path}: {variant.name} names a missing {variant.config}"


def _report(out: Path, name: str, metrics: dict, timing: dict | None = None) -> None:
    (out / name / "test").mkdir(parents=True)
    (out / name / "test" / "report.json").write_text(json.dumps({"metrics": metrics}))
    if timing is not None:
        (out / name / "timing.json").write_text(json.dumps(timing))


def test_table_lists_done_variants_in_percent_with_the_overrides(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "spec.yaml",
        "title: T\ncommon: [train.seed=0]\nvariants:\n"
        "  - {name: a, config: c.yaml}\n"
        "  - {name: b, config: c.yaml, overrides: [x.y=1]}\n"
        "  - {name: c, config: c.yaml, train: false, checkpoint: '{out}/a/last.pt', test_args: [--flip]}\n",
    )
    spec = ablation.load_spec(path)
    out = tmp_path / "out"
    _report(out, "a", {"frame_mAP": 0.1234, "video_mAP@0.5": None}, {"train_wall_s": 120.0, "train_cpu_s": 60.0})
    _report(out, "c", {"frame_mAP": 0.5, "video_mAP@0.5": 0.25})
    lines = ablation.table(spec, out, ["train.epochs=2"]).splitlines()
    assert lines[0] == "**T** (overrides of every variant: `train.seed=0 train.epochs=2`)"
    assert lines[2] == "| variant | overrides | train wall / CPU (min) | frame_mAP | video_mAP@0.5 |"
    assert lines[4] == "| a | `-` | 2.0 / 1.0 | 12.34 | - |"
    assert lines[5] == "| c | `--flip` | (test only: `{out}/a/last.pt`) | 50.00 | 25.00 |"
    assert len(lines) == 6  # b has no report yet


def test_set_overrides_are_stored_and_a_different_set_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "spec.yaml", "variants: [{name: a, config: c.yaml}]\n")
    out = tmp_path / "out"
    _report(out, "a", {"frame_mAP": 0.5}, {"train_wall_s": 60.0, "train_cpu_s": 60.0})
    (out / "set.json").write_text(json.dumps(["train.epochs=2"]))
    assert ablation.main([str(path), "--out", str(out), "--table-only"]) == 0
    assert "`train.epochs=2`" in (out / "table.md").read_text()
    with pytest.raises(SystemExit, match="made with --set"):
        ablation.main([str(path), "--out", str(out), "--set", "train.epochs=3"])
