"""End to end through the CLI: stad train -> stad test -> stad detect -> stad export, on the tiny synthetic set."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from stad.cli import main
from stad.config import config_to_dict
from stad.engine.runner import load_detector
from tests.conftest import tiny_moc_config


@pytest.fixture(scope="module")
def trained(tiny_synth, tmp_path_factory):
    """One short epoch of `stad train` with a YAML written from the tiny config; returns (config path, run dir)."""
    out = tmp_path_factory.mktemp("run")
    cfg_path = out / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(tiny_moc_config(tiny_synth, out / "run"))))
    rc = main(["train", str(cfg_path), "train.epochs=1", "train.val_every=1", "train.best_metric=frame_mAP"])
    assert rc == 0
    return cfg_path, out / "run"


def test_train_writes_checkpoints_config_and_logs(trained):
    _, run = trained
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file() and (run / "config.yaml").is_file()
    assert any((run / "tb").iterdir())
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["labels"] == ["walk", "run", "jump", "squat", "wave", "flap", "spin", "sway"]
    assert saved["model"]["num_classes"] == 8 and saved["model"]["options"]["K"] == 7


def test_test_writes_predictions_and_report(trained, capsys):
    cfg_path, run = trained
    rc = main(["test", str(cfg_path), "--checkpoint", str(run / "last.pt"), "--out", str(run / "test")])
    assert rc == 0
    assert "frame-mAP@0.5" in capsys.readouterr().out
    report = json.loads((run / "test" / "report.json").read_text())
    assert 0.0 <= report["metrics"]["frame_mAP"] <= 1.0
    assert set(report["video_map"]["mAP"]) == {"0.05", "0.1", "0.2", "0.3", "0.5", "0.75", "0.5:0.95"}
    header = (run / "test" / "detections.csv").read_text().splitlines()[0]
    assert header == "video,frame,label,score,x1,y1,x2,y2"
    assert (run / "test" / "tubes.json").is_file() and (run / "test" / "tubelets.npz").is_file()
    assert "| walk" in (run / "test" / "report.md").read_text()


def test_eval_commands_on_written_predictions_match_the_report(trained, tiny_synth, capsys):
    cfg_path, run = trained
    test_dir = run / "test_again"
    assert main(["test", str(cfg_path), "--checkpoint", str(run / "last.pt"), "--out", str(test_dir)]) == 0
    report = json.loads((test_dir / "report.json").read_text())
    out_json = test_dir / "fm.json"
    assert main(["eval", "frame-map", "--gt", str(tiny_synth / "Synth-GT.pkl"), "--detections",
                 str(test_dir / "detections.csv"), "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["mAP"] == pytest.approx(report["metrics"]["frame_mAP"], abs=1e-6)
    assert main(["eval", "video-map", "--gt", str(tiny_synth / "Synth-GT.pkl"), "--tubes", str(test_dir / "tubes.json"),
                 "--json", str(out_json)]) == 0
    assert json.loads(out_json.read_text())["mAP"]["0.5"] == pytest.approx(report["metrics"]["video_mAP@0.5"], abs=1e-6)


def test_detect_on_a_video_file_writes_mp4_json_csv(trained, tiny_synth, tmp_path, capsys):
    from stad.data.frames import act_frame_path, read_rgb
    from stad.viz.video import read_video, write_video

    _, run = trained
    frames = np.stack([read_rgb(act_frame_path(tiny_synth, "video_00001", t)) for t in range(1, 33)])
    video = write_video(tmp_path / "clip.mp4", frames, fps=25)
    rc = main(["detect", str(video), "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "det"), "--device", "cpu"])
    assert rc == 0
    assert "tubes" in capsys.readouterr().out
    annotated = read_video(tmp_path / "det" / "clip_tubes.mp4")
    assert annotated.shape[0] == 32
    tubes = json.loads((tmp_path / "det" / "clip_tubes.json").read_text())
    assert list(tubes) == ["clip"]
    assert (tmp_path / "det" / "clip_detections.csv").is_file()


def test_export_gives_a_small_checkpoint_with_the_same_detections(trained, tmp_path):
    _, run = trained
    assert main(["export", str(run / "last.pt"), str(tmp_path / "slim.pt")]) == 0
    assert (tmp_path / "slim.pt").stat().st_size < 0.6 * (run / "last.pt").stat().st_size
    full, _ = load_detector(run / "last.pt")
    slim, cfg = load_detector(tmp_path / "slim.pt")
    assert cfg.model.labels[0] == "walk"
    clip = torch.randn(1, 7, 3, 96, 128)
    a, b = full.detect(clip)[0], slim.detect(clip)[0]
    np.testing.assert_allclose(a.score[:5], b.score[:5], atol=2e-3)


def test_bad_inputs_are_one_line_errors(trained, tmp_path, capsys):
    cfg_path, run = trained
    assert main(["train", str(cfg_path), "train.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err and "Traceback" not in err
    assert main(["test", str(cfg_path), "eval.options.flipp=true", "--checkpoint", str(run / "last.pt")]) == 2
    assert "unknown config key(s) eval.options.flipp" in capsys.readouterr().err
    assert main(["train", str(cfg_path), "data.options.presett=tiny"]) == 2
    assert "data.options.presett" in capsys.readouterr().err
    assert main(["test", str(cfg_path), "--checkpoint", str(tmp_path / "missing.pt")]) == 2
    assert "missing.pt" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "none.mp4"), "--checkpoint", str(run / "last.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_overrides_may_follow_the_options():
    """`stad test CONFIG --checkpoint CKPT key=value` (issue 14): overrides anywhere after the config, in order."""
    from stad.cli import parse_command_line

    args = parse_command_line(["test", "c.yaml", "a.b=1", "--checkpoint", "k.pt", "eval.subset=train", "c.d=2"])
    assert args.overrides == ["a.b=1", "eval.subset=train", "c.d=2"] and args.checkpoint == "k.pt"
    args = parse_command_line(["train", "c.yaml", "--resume", "r.pt", "train.epochs=2"])
    assert args.overrides == ["train.epochs=2"] and args.resume == "r.pt"


def test_unknown_arguments_are_errors_naming_the_command(capsys):
    from stad.cli import parse_command_line

    for argv in (["test", "c.yaml", "--checkpoint", "k.pt", "--bogus"], ["validate", "d", "x=1"]):
        with pytest.raises(SystemExit) as exit_info:
            parse_command_line(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert f"stad {argv[0]}: error: unrecognized arguments" in err
