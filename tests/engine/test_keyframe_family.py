"""The keyframe family end to end on the tiny synthetic AVA layout: stad train -> stad test -> stad eval ava ->
stad detect, with a divisor-8 STEP at 64x64 (every mechanism kept: 34 proposals, 3 steps, temporal extension)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from stad.cli import main
from stad.config import config_from_dict, config_to_dict
from stad.data.ava import read_ava_predictions
from stad.engine.families import family_name, get_family
from stad.data.keyframes import second_index
from stad.errors import StadError

TINY_STEP = {"channel_divisor": 8, "fc_dim": 16, "bottleneck_mid": 32, "bottleneck_out": 128, "pool_size": 4}


@pytest.fixture(scope="module")
def tiny_ava(tmp_path_factory):
    """4 videos x 91 frames (keyframes at seconds 1..3) of the tiny preset in the AVA layout."""
    root = tmp_path_factory.mktemp("tiny_ava")
    assert main(["synth", "--preset", "tiny", "--videos", "4", "--frames", "91", "--layout", "ava", "--out", str(root),
                 "--no-progress"]) == 0
    return root


def step_config(root, out, **train):
    return config_from_dict({
        "data": {"kind": "synthetic", "root": str(root), "options": {"preset": "tiny"}, "input_size": [64, 64],
                 "batch_size": 2, "num_workers": 0},
        "model": {"name": "step", "backbone": "i3d", "options": dict(TINY_STEP)},
        "train": {"epochs": 1, "optimizer": "adam", "lr": 1e-4, "scheduler": "warmup_cosine", "warmup_iters": 2,
                  "warmup_factor": 0.1, "seed": 0, "device": "cpu", "val_every": 0, "output_dir": str(out), **train},
        "eval": {"batch_size": 4},
    })


@pytest.fixture(scope="module")
def trained(tiny_ava, tmp_path_factory):
    out = tmp_path_factory.mktemp("step_run")
    cfg_path = out / "step.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(step_config(tiny_ava, out / "run"))))
    torch.set_num_threads(1)
    assert main(["train", str(cfg_path), "train.val_every=1", "train.best_metric=frame_mAP"]) == 0
    return cfg_path, out / "run"


def test_models_dispatch_to_their_family():
    assert [family_name(m) for m in ("moc", "stado", "keypoint", "step", "step_cls")] == [
        "tubelet", "tubelet", "frame", "keyframe", "keyframe"]
    assert get_family("step").name == "keyframe"
    with pytest.raises(StadError, match="unknown model 'nope'"):
        family_name("nope")


def test_train_writes_a_checkpoint_with_the_label_map(trained):
    _, run = trained
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["labels"][:2] == ["walk", "run"] and saved["model"]["labels"][-4:] == ["stand", "near", "approach", "face"]
    assert saved["model"]["label_ids"] == list(range(1, 13))
    assert saved["model"]["options"]["input_size"] == [64, 64]
    assert (run / "best.pt").is_file() and (run / "last.pt").is_file()


def test_test_writes_per_step_csvs_that_stad_eval_ava_scores_alike(trained, tiny_ava, capsys):
    cfg_path, run = trained
    out = run / "test"
    assert main(["test", str(cfg_path), "--checkpoint", str(run / "last.pt"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "frame-mAP@0.5" in printed and "| step | frame-mAP@0.5 % |" in printed
    report = json.loads((out / "report.json").read_text())
    assert report["keyframes"] == 3  # one test video (test_every 4) with keyframes at seconds 1, 2, 3
    assert set(report["metrics"]) == {"frame_mAP", "frame_mAP/step1", "frame_mAP/step2", "frame_mAP/step3", "actor_AP",
                                      "frame_mAP/vis0-0.25", "frame_mAP/vis0.25-0.75", "frame_mAP/vis0.75-1"}
    assert sum(band["n_gt"] for band in report["visibility_bands"].values()) == 6  # every test actor row in a band
    assert report["metrics"]["frame_mAP"] == report["metrics"]["frame_mAP/step3"]
    assert [p for p in report["predictions"]] == ["predictions.csv", "predictions_step1.csv", "predictions_step2.csv",
                                                  "predictions_step3.csv"]
    rows = read_ava_predictions(out / "predictions_step3.csv")
    assert len(rows) > 0 and set(rows.video.tolist()) == {"video_00003"}
    assert set(rows.timestamp.tolist()) <= {1, 2, 3} and np.all((rows.boxes >= 0) & (rows.boxes <= 1))
    assert set(rows.action_id.tolist()) <= set(range(1, 13))
    ann = tiny_ava / "annotations"
    for k in (1, 3):
        json_out = out / f"ava{k}.json"
        assert main(["eval", "ava", "--gt", str(ann / "Synth_val.csv"), "--labelmap", str(ann / "Synth_action_list.pbtxt"),
                     "--detections", str(out / f"predictions_step{k}.csv"), "--json", str(json_out)]) == 0
        scored = json.loads(json_out.read_text())["mAP"]
        assert scored == pytest.approx(report["metrics"][f"frame_mAP/step{k}"], abs=1e-9)


def test_detect_on_a_video_writes_the_actions_mp4_and_predictions(trained, tiny_ava, tmp_path, capsys):
    from stad.data.frames import read_rgb
    from stad.viz.video import read_video, write_video

    _, run = trained
    frames = np.stack([read_rgb(tiny_ava / "frames" / "video_00003" / f"img_{t:05d}.jpg") for t in range(1, 61)])
    video = write_video(tmp_path / "clip.mp4", frames, fps=30)
    assert main(["detect", str(video), "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "det"),
                 "--device", "cpu", "--conf", "0.05"]) == 0
    assert "2 keyframes" in capsys.readouterr().out
    assert read_video(tmp_path / "det" / "clip_actions.mp4").shape[0] == 60
    rows = read_ava_predictions(tmp_path / "det" / "clip_predictions.csv")
    assert set(rows.timestamp.tolist()) <= {0, 1} and np.all(rows.score >= 0.05)


def test_second_index_splits_frames_into_seconds():
    seconds, first, counts = second_index(61, 30.0)
    assert seconds.tolist() == [0, 1, 2] and first.tolist() == [1, 31, 61] and counts.tolist() == [30, 30, 1]
    seconds, first, counts = second_index(50, 12.5)  # frame f is at time (f - 1) / 12.5
    assert first.tolist() == [1, 14, 26, 39] and counts.tolist() == [13, 12, 13, 12]


def test_a_keyframe_model_refuses_fusion_and_tubelet_options(trained, tmp_path, capsys):
    cfg_path, run = trained
    assert main(["test", str(cfg_path), "--checkpoint", str(run / "last.pt"), "--flow-checkpoint", str(run / "last.pt"),
                 "--out", str(tmp_path)]) != 0
    assert "--flow-checkpoint" in capsys.readouterr().err


def test_a_missing_frame_is_an_error_naming_the_file(tiny_ava, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(tiny_ava, root)
    (root / "frames" / "video_00003" / "img_00031.jpg").unlink()
    cfg = step_config(root, tmp_path / "run")
    family = get_family("step")
    data = family.load_data(cfg, progress=False)
    model_cfg = family.resolve_model_config(cfg, data)
    from stad.models.registry import build_model

    with pytest.raises((StadError, FileNotFoundError), match="img_00031.jpg"):
        family.predict(build_model(model_cfg.model), model_cfg, data, device="cpu", progress=False)


def test_a_tube_data_set_is_not_a_keyframe_data_set(tmp_path):
    cfg = config_from_dict({"data": {"kind": "act", "gt_file": "x.pkl"}, "model": {"name": "step"}})
    with pytest.raises(StadError, match="not a keyframe data set"):
        get_family("step").load_data(cfg)


def test_an_ava_config_names_its_files(tmp_path):
    cfg = config_from_dict({"data": {"kind": "ava", "root": str(tmp_path), "options": {"train_csv": "a.csv"}},
                            "model": {"name": "step"}})
    with pytest.raises(StadError, match="data.options.val_csv"):
        get_family("step").load_data(cfg)
    cfg = config_from_dict({"data": {"kind": "ava", "root": str(tmp_path), "options": {"train_cvs": "a.csv"}},
                            "model": {"name": "step"}})
    with pytest.raises(StadError, match="unknown config key.*data.options.train_cvs"):
        get_family("step").load_data(cfg)


def test_stream_and_profile_refuse_a_keyframe_model(trained, tmp_path, capsys):
    _, run = trained
    assert main(["stream", str(tmp_path), "--checkpoint", str(run / "last.pt"), "--out", str(tmp_path / "s")]) != 0
    assert "keyframe family" in capsys.readouterr().err
    assert main(["profile", str(run / "last.pt")]) != 0
    assert "keyframe family" in capsys.readouterr().err
