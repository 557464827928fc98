"""A synthetic data set named by a config is used as it is on disk, never rendered over (issue 18)."""

from __future__ import annotations

import json
import os
import pickle

import pytest

from stad.cli import main
from stad.config import config_from_dict
from stad.data.synthetic import (
    MARKER,
    PARTIAL_MARKER,
    SynthConfig,
    config_from_options,
    plan_dataset,
    render_dataset,
)
from stad.engine.families.common import load_data
from stad.errors import StadError
from tests.conftest import tiny_moc_config


def _gt_videos(root) -> int:
    with open(root / "Synth-GT.pkl", "rb") as fh:
        return len(pickle.load(fh)["nframes"])


def _snapshot(root) -> dict[str, int]:
    """Every file under ``root`` with its modification time in ns (a rendering over it changes them)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_a_config_trains_on_the_data_set_on_disk_and_leaves_it_untouched(tmp_path, capsys):
    """The issue's scenario: `stad synth --videos N` (N != the preset's), then `stad train` on it."""
    data = tmp_path / "s10"
    assert main(["synth", "--preset", "tiny", "--videos", "10", "--out", str(data), "--no-progress"]) == 0
    before = _snapshot(data)
    cfg = tiny_moc_config(data, tmp_path / "run")  # data.options = {preset: tiny}: the tiny preset has 8 videos
    loaded = load_data(cfg.data)
    assert len(loaded.annotations.nframes) == 10
    cfg_path = tmp_path / "tiny.yaml"
    import yaml

    from stad.config import config_to_dict

    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    capsys.readouterr()
    assert main(["train", str(cfg_path), "train.epochs=1"]) == 0
    assert "rendering" not in capsys.readouterr().out
    assert _snapshot(data) == before  # not a byte rewritten, no file added
    assert _gt_videos(data) == 10
    assert (tmp_path / "run" / "last.pt").is_file()


def test_an_explicit_setting_that_the_data_set_lacks_is_an_error_naming_both(tmp_path):
    data = tmp_path / "tiny"
    render_dataset(SynthConfig.preset("tiny", videos=2), data)
    before = _snapshot(data)
    for options, match in [({"preset": "small"}, r"preset='small'.*preset='tiny'"),
                           ({"preset": "tiny", "seed": 3}, r"seed=3.*seed=0"),
                           ({"videos": 5}, r"videos=5.*videos=2"),
                           ({"size": 120}, r"height=120.*height=96"),
                           ({"synth_occlusion": 0.9}, r"occlusion=0.9.*occlusion=0.35")]:
        cfg = tiny_moc_config(data, tmp_path / "run").data
        cfg.options = options
        with pytest.raises(StadError, match=match):
            load_data(cfg)
    assert _snapshot(data) == before


def test_the_occlusion_augmentation_rate_is_not_a_data_set_setting(tmp_path):
    data = tmp_path / "tiny"
    render_dataset(SynthConfig.preset("tiny", videos=2), data)
    assert plan_dataset(data, {"preset": "tiny", "occlusion": 0.5}).action == "use"


def test_matching_explicit_settings_are_accepted(tmp_path):
    data = tmp_path / "tiny"
    render_dataset(SynthConfig.preset("tiny", videos=2, frames=40), data)
    options = {"preset": "tiny", "seed": 0, "videos": 2, "frames": 40, "size": 96, "classes": "spin,walk"}
    with pytest.raises(StadError, match="classes"):
        plan_dataset(data, options)
    options.pop("classes")
    assert plan_dataset(data, options).action == "use"


def test_an_empty_folder_is_rendered_once_from_the_options(tmp_path, capsys):
    data = tmp_path / "new"
    data.mkdir()
    cfg = config_from_dict({"data": {"kind": "synthetic", "root": str(data),
                                     "options": {"preset": "tiny", "videos": 3, "frames": 20, "size": 64}}})
    loaded = load_data(cfg.data, progress=False)
    assert "rendering the synthetic 'tiny' data set (3 videos x 20 frames, 64x85" in capsys.readouterr().out
    assert len(loaded.annotations.nframes) == 3 and set(loaded.annotations.nframes.values()) == {20}
    saved = json.loads((data / MARKER).read_text())
    assert saved["config"]["videos"] == 3 and saved["config"]["width"] == 85
    assert not (data / PARTIAL_MARKER).exists()
    before = _snapshot(data)
    load_data(cfg.data, progress=False)
    assert "rendering" not in capsys.readouterr().out
    assert _snapshot(data) == before


def test_a_folder_with_other_files_is_never_rendered_into(tmp_path):
    data = tmp_path / "mine"
    data.mkdir()
    (data / "notes.txt").write_text("mine")
    with pytest.raises(StadError, match="not empty and holds no synthetic data set"):
        plan_dataset(data, {"preset": "tiny"})


def test_an_interrupted_rendering_is_resumed_to_the_same_bytes(tmp_path, monkeypatch):
    import stad.data.synthetic as synthetic

    cfg = SynthConfig.preset("tiny", videos=4, frames=20)
    reference = tmp_path / "reference"
    render_dataset(cfg, reference)

    data = tmp_path / "interrupted"
    calls = {"n": 0}
    real = synthetic.render_video

    def dying(c, index, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(c, index, **kw)

    monkeypatch.setattr(synthetic, "render_video", dying)
    with pytest.raises(KeyboardInterrupt):
        render_dataset(cfg, data)
    monkeypatch.setattr(synthetic, "render_video", real)
    assert not (data / MARKER).exists()
    saved = json.loads((data / PARTIAL_MARKER).read_text())
    assert saved["done"] == ["video_00000", "video_00001"]
    written = (data / "rgb-images" / "video_00000" / "00001.jpg").stat().st_mtime_ns

    options = {"preset": "tiny", "videos": 4, "frames": 20}
    assert plan_dataset(data, options).action == "resume"
    with pytest.raises(StadError, match=r"interrupted rendering of other settings \(videos=4.*videos=5"):
        plan_dataset(data, {**options, "videos": 5})
    cfg_data = config_from_dict({"data": {"kind": "synthetic", "root": str(data), "options": options}}).data
    load_data(cfg_data, progress=False)
    assert (data / "rgb-images" / "video_00000" / "00001.jpg").stat().st_mtime_ns == written  # not written again
    ref_files = {p.relative_to(reference) for p in reference.rglob("*") if p.is_file()}
    assert ref_files == {p.relative_to(data) for p in data.rglob("*") if p.is_file()}
    for rel in ref_files:
        assert (reference / rel).read_bytes() == (data / rel).read_bytes(), rel


def test_stad_synth_resumes_its_own_interrupted_rendering_and_needs_overwrite_otherwise(tmp_path, capsys):
    data = tmp_path / "d"
    cfg = SynthConfig.preset("tiny", videos=2, frames=20)
    render_dataset(cfg, data)
    os.remove(data / MARKER)  # as if killed before the end
    (data / PARTIAL_MARKER).write_text(json.dumps({"config": cfg.to_json(), "layout": "act", "done": ["video_00000"]}))
    assert main(["synth", "--preset", "tiny", "--videos", "2", "--frames", "20", "--out", str(data), "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert (data / MARKER).is_file() and not (data / PARTIAL_MARKER).exists()
    assert main(["synth", "--preset", "tiny", "--videos", "3", "--out", str(data), "--no-progress"]) != 0
    assert "is not empty; pass --overwrite" in capsys.readouterr().err


def test_a_data_set_without_the_needed_layout_is_an_error(tmp_path):
    data = tmp_path / "ava"
    render_dataset(SynthConfig.preset("tiny", videos=1, frames=61), data, layout="ava")
    with pytest.raises(StadError, match="'ava' layout, this model needs the 'act' layout"):
        plan_dataset(data, {}, layout="act")
    assert plan_dataset(data, {}, layout="ava").action == "use"


def test_config_from_options_applies_the_stad_synth_settings():
    cfg = config_from_options({"preset": "occluded", "videos": 7, "frames": 91, "size": 90, "synth_occlusion": 0.5,
                               "classes": ["wave", "walk"], "seed": 4})
    assert (cfg.preset, cfg.videos, cfg.frames, cfg.height, cfg.width, cfg.occlusion, cfg.classes, cfg.seed) == (
        "occluded", 7, 91, 90, 120, 0.5, ("walk", "wave"), 4)
    assert config_from_options({}).preset == "small"
