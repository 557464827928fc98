"""stad proposals: a person detector trained in stad (class-agnostic key-point CenterNet) gives AVA-style person
proposals for every keyframe of a data set or a video, in the formats the keyframe readers take."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from stad.cli import main
from stad.config import config_from_dict, config_to_dict
from stad.data.ava import read_proposals
from stad.data.keyframes import read_proposals_csv
from stad.data.synthetic import SynthConfig, load_annotations, render_dataset
from stad.engine.families.common import load_data
from stad.structures import TubeAnnotations


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """3 tiny videos x 91 frames in the ACT and AVA layouts."""
    root = tmp_path_factory.mktemp("both")
    render_dataset(SynthConfig.preset("tiny", videos=3, frames=91), root, layout="both")
    return root


@pytest.fixture(scope="module")
def person_detector(both, tmp_path_factory):
    out = tmp_path_factory.mktemp("person")
    cfg = config_from_dict({
        "data": {"kind": "synthetic", "root": str(both), "options": {"preset": "tiny", "person_boxes": True},
                 "input_size": [96, 128], "batch_size": 8, "num_workers": 0},
        "model": {"name": "keypoint", "backbone": "resnet18",
                  "options": {"cue": "ssim", "gap": 2, "width": 0.25, "deformable": False, "head_conv": 16, "top_n": 10}},
        "train": {"epochs": 1, "lr": 1e-3, "scheduler": "none", "device": "cpu", "val_every": 0, "output_dir": str(out)},
    })
    path = out / "person.yaml"
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    torch.set_num_threads(1)
    assert main(["train", str(path)]) == 0
    return out / "last.pt"


def test_person_ground_truth_has_every_actor_on_every_frame(both):
    actions = load_annotations(both)
    persons = load_annotations(both, persons=True)
    assert persons.labels == ["person"]
    for video in persons.videos:
        tubes = persons.gttubes[video][0]
        assert len(tubes) == sum(len(t) for t in actions.gttubes[video].values())  # one per actor
        assert all(len(t) == 91 and t[0, 0] == 1 and t[-1, 0] == 91 for t in tubes)  # idle frames included
        assert [len(v) for v in persons.visibility[video][0]] == [91] * len(tubes)


def test_person_boxes_option_gives_one_class(both):
    cfg = config_from_dict({"data": {"kind": "synthetic", "root": str(both), "options": {"person_boxes": True}}})
    assert load_data(cfg.data).annotations.labels == ["person"]


def test_class_agnostic_merges_the_tubes_of_all_labels():
    tube = np.array([[1, 0, 0, 9, 9]], np.float32)
    ann = TubeAnnotations(labels=["a", "b"], gttubes={"v": {0: [tube], 1: [tube + 1, tube + 2]}}, nframes={"v": 5},
                          resolution={"v": (10, 10)}, train_videos=[["v"]], test_videos=[[]])
    merged = ann.class_agnostic()
    assert merged.labels == ["person"] and len(merged.gttubes["v"][0]) == 3 and merged.visibility is None


def test_proposals_of_a_data_set_as_mmaction2_pickle(both, person_detector, tmp_path, capsys):
    out = tmp_path / "proposals.pkl"
    assert main(["proposals", str(both), "--checkpoint", str(person_detector), "--out", str(out), "--min-score", "0",
                 "--top-k", "5", "--first-timestamp", "1", "--device", "cpu", "--no-progress"]) == 0
    assert "classes merged" in capsys.readouterr().out
    proposals = read_proposals(out)
    assert set(proposals) == {(f"video_{i:05d}", s) for i in range(3) for s in (1, 2, 3)}
    for rows in proposals.values():
        assert rows.shape[1] == 5 and 1 <= len(rows) <= 5
        assert np.all(rows[:, :4] >= 0) and np.all(rows[:, 2] > rows[:, 0]) and np.all(np.diff(rows[:, 4]) <= 0)


def test_proposals_of_a_video_as_csv(both, person_detector, tmp_path):
    from stad.data.frames import read_rgb
    from stad.viz.video import write_video

    frames = np.stack([read_rgb(both / "frames" / "video_00001" / f"img_{t:05d}.jpg") for t in range(1, 61)])
    video = write_video(tmp_path / "walk.mp4", frames, fps=30)
    out = tmp_path / "walk.csv"
    assert main(["proposals", str(video), "--checkpoint", str(person_detector), "--out", str(out), "--min-score", "0",
                 "--device", "cpu"]) == 0
    assert set(read_proposals_csv(out)) == {("walk", 0), ("walk", 1)}


def test_proposals_need_a_frame_detector(tmp_path, capsys):
    from stad.engine.checkpoint import save_checkpoint
    from stad.models.registry import build_model

    cfg = config_from_dict({"model": {"name": "moc", "num_classes": 2,
                                      "options": {"width": 0.25, "deformable": False, "head_conv": 16, "wh_head_conv": 16}}})
    ckpt = tmp_path / "moc.pt"
    save_checkpoint(ckpt, model=build_model(cfg.model), epoch=0, step=0, config=cfg)
    assert main(["proposals", str(tmp_path), "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.pkl")]) != 0
    assert "needs a frame detector" in capsys.readouterr().err
