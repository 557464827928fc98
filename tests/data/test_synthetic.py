"""The synthetic benchmark: determinism, annotation consistency, motion-defined classes, layouts."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest

from stad.data.synthetic import (
    CLASS_NAMES,
    IDLE_NAME,
    INTERACTION_NAMES,
    JOINT_NAMES,
    Occluder,
    SynthConfig,
    ava_keyframe_seconds,
    load_annotations,
    render_dataset,
    render_scene,
    render_video,
    sample_scene,
    summarize,
)
from stad.errors import StadError


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _quiet_scene(cfg: SynthConfig, index: int):
    """The scene of video ``index`` on a black, noise-free, still background without occluders."""
    scene = sample_scene(cfg, index)
    return dataclasses.replace(scene, background=np.zeros_like(scene.background), noise=np.zeros_like(scene.noise),
                               brightness=np.zeros_like(scene.brightness), occluders=[])


def test_same_seed_gives_identical_files_and_another_seed_differs(tmp_path):
    cfg = SynthConfig.preset("tiny", videos=3, frames=61)
    render_dataset(cfg, tmp_path / "a", layout="both")
    render_dataset(cfg, tmp_path / "b", layout="both")
    render_dataset(dataclasses.replace(cfg, seed=1), tmp_path / "c", layout="both")
    a, b, c = _hashes(tmp_path / "a"), _hashes(tmp_path / "b"), _hashes(tmp_path / "c")
    assert len(a) == 3 * 61 * 2 + 3 + 7 + 1 + 3  # frames in both layouts, 3 pickles (GT, visibility, persons), 7 AVA files, synth.json, 3 occluder masks
    assert a == b
    assert a.keys() == c.keys()
    differ = [k for k in a if a[k] != c[k]]
    assert "Synth-GT.pkl" in differ and len(differ) > 3 * 61


def test_a_video_does_not_depend_on_the_number_of_videos():
    few, many = SynthConfig.preset("tiny", videos=2), SynthConfig.preset("tiny", videos=50)
    v1, v2 = render_video(few, 1), render_video(many, 1)
    assert np.array_equal(v1.frames, v2.frames)
    assert [a.tube().tolist() for a in v1.actors] == [a.tube().tolist() for a in v2.actors]


def test_box_is_the_extent_of_the_actor_pixels():
    cfg = SynthConfig.preset("tiny", actors=(1, 1))
    for index in range(4):
        video = render_scene(_quiet_scene(cfg, index), return_masks=True)
        (actor,) = video.actors
        for t in range(cfg.frames):
            # on a black background every non-black pixel belongs to the actor (its colours are never 0)
            ys, xs = np.nonzero(video.frames[t].any(axis=-1))
            assert np.array_equal(video.masks[0, t], video.frames[t].any(axis=-1))
            assert actor.boxes[t].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
            assert actor.visibility[t] == 1.0


def test_visibility_equals_the_uncovered_fraction_for_a_hand_made_occluder():
    cfg = SynthConfig.preset("tiny", actors=(1, 1))
    scene = _quiet_scene(cfg, 2)
    box = render_scene(scene).actors[0].boxes[10]
    cx = float(np.floor((box[0] + box[2]) / 2))  # a 6-pixel bar with integer edges: columns cx-3 .. cx+2
    bar = Occluder(kind="vbar", size=(6.0, 1000.0), centre=np.tile([cx, 48.0], (cfg.frames, 1)),
                   color=np.array([200, 10, 10], np.uint8), texture=np.full((8, 8), 128, np.uint8))
    video = render_scene(dataclasses.replace(scene, occluders=[bar]), return_masks=True)
    c0, c1 = int(cx) - 3, int(cx) + 3
    for t in range(cfg.frames):
        mask = video.masks[0, t]
        covered = mask[:, c0:c1].sum()
        assert video.actors[0].visibility[t] == pytest.approx(1.0 - covered / mask.sum())
        assert (video.frames[t, :, c0:c1] == [200, 10, 10]).all()  # the bar is opaque and in front
        assert video.actors[0].boxes[t].tolist() == render_scene(scene).actors[0].boxes[t].tolist()  # amodal box
    assert video.actors[0].visibility[10] < 0.95


def test_front_actor_hides_the_actor_behind():
    cfg = SynthConfig.preset("tiny", actors=(2, 2), occlusion=0.0, distractors=0.0)
    for index in range(20):
        video = render_scene(_quiet_scene(cfg, index), return_masks=True)
        overlap = (video.masks[0] & video.masks[1]).sum(axis=(1, 2))  # [T]
        t = int(overlap.argmax())
        if overlap[t] == 0:
            continue
        assert video.actors[1].visibility[t] == 1.0  # drawn last: in front
        assert video.actors[0].visibility[t] == pytest.approx(1 - overlap[t] / video.masks[0, t].sum())
        return
    pytest.fail("no video with overlapping actors among 20")


def test_tubes_are_consecutive_inside_the_video_and_actions_start_and_end_inside():
    cfg = SynthConfig.preset("tiny", videos=12)
    for index in range(cfg.videos):
        video = render_video(cfg, index)
        assert 1 <= len(video.actors) <= 3
        for actor in video.actors:
            tube, vis = actor.tube(), actor.tube_visibility()
            assert tube.dtype == np.float32 and tube.shape[1] == 5 and vis.shape == (len(tube),)
            assert np.array_equal(tube[:, 0], np.arange(actor.start, actor.end + 1))
            assert 2 <= actor.start and actor.end <= cfg.frames - 1 and len(tube) >= 8
            x1, y1, x2, y2 = tube[:, 1:].T
            assert (x1 >= 0).all() and (x2 <= cfg.width - 1).all() and (x2 >= x1).all()
            assert (y1 >= 0).all() and (y2 <= cfg.height - 1).all() and (y2 >= y1).all()
            assert ((vis >= 0) & (vis <= 1)).all()
            assert not np.isnan(actor.boxes).any()  # the actor is there (idle) before and after its action


def _pose_and_speed(classes: tuple[str, ...], videos: int):
    """Per-frame pose features (joints relative to the hip, in heights) and per-actor speeds (heights/s)."""
    cfg = SynthConfig.preset("tiny", videos=videos, classes=classes, actors=(3, 3), frames=48)
    poses, pose_labels, speeds, speed_labels = [], [], [], []
    for index in range(videos):
        scene = sample_scene(cfg, index)
        for spec, joints in zip(scene.actors, scene.joints):
            ramp = int(0.25 * cfg.fps) + 1  # skip the blend from/to idle
            frames = np.arange(spec.start - 1 + ramp, spec.end - ramp)
            rel = (joints.points[frames] - joints.root[frames, None]) / spec.height  # [n, 15, 2]
            poses.append(rel.reshape(len(frames), -1))
            pose_labels += [spec.action] * len(frames)
            step = np.abs(np.diff(joints.root[frames, 0]))
            speeds.append(float(np.median(step)) * cfg.fps / spec.height)
            speed_labels.append(spec.action)
    return np.concatenate(poses), np.array(pose_labels), np.array(speeds), np.array(speed_labels)


def test_walk_and_run_share_the_pose_and_differ_by_motion():
    poses, labels, speeds, speed_labels = _pose_and_speed(("walk", "run"), videos=24)
    assert len(JOINT_NAMES) * 2 == poses.shape[1]
    # one frame alone: a 1-nearest-neighbour classifier on the pose is near chance
    rng = np.random.default_rng(0)
    order = rng.permutation(len(poses))
    train, test = order[: len(order) // 2], order[len(order) // 2:]
    d = ((poses[test, None, :] - poses[None, train, :]) ** 2).sum(-1)  # [n_test, n_train]
    accuracy = float((labels[train][d.argmin(1)] == labels[test]).mean())
    assert 0.35 < accuracy < 0.65, accuracy
    # but the motion separates them: walking speed < 0.75 heights/s < running speed
    assert set(speed_labels) == {"walk", "run"}
    assert speeds[speed_labels == "walk"].max() < 0.75 < speeds[speed_labels == "run"].min()


def test_ava_layout(tmp_path):
    cfg = SynthConfig.preset("tiny", videos=4, frames=61)
    ann = render_dataset(cfg, tmp_path, layout="both")
    assert ava_keyframe_seconds(cfg) == [1, 2]
    names = re.findall(r'item \{\n  name: "([^"]+)"\n  id: (\d+)\n\}', (tmp_path / "annotations" /
                                                                   "Synth_action_list.pbtxt").read_text())
    assert [n for n, _ in names] == [*CLASS_NAMES, IDLE_NAME, *INTERACTION_NAMES]
    assert [int(i) for _, i in names] == list(range(1, len(names) + 1))
    pose_ids = set(range(1, len(CLASS_NAMES) + 2))
    for split, videos in (("train", ann.train_videos[0]), ("val", ann.test_videos[0])):
        rows = [line.split(",") for line in (tmp_path / "annotations" / f"Synth_{split}.csv").read_text().splitlines()]
        assert rows and all(len(r) == 8 for r in rows)
        assert {r[0] for r in rows} == set(videos)
        assert {r[1] for r in rows} == {"0001", "0002"}
        box = np.array([[float(v) for v in r[2:6]] for r in rows])
        assert ((box >= 0) & (box <= 1)).all() and (box[:, 2] > box[:, 0]).all() and (box[:, 3] > box[:, 1]).all()
        actors: dict[tuple[str, str, str], list[int]] = {}
        for r in rows:
            actors.setdefault((r[0], r[1], r[7]), []).append(int(r[6]))
        for key, ids in actors.items():
            assert len([i for i in ids if i in pose_ids]) == 1, key  # exactly one pose action per actor
    video = ann.test_videos[0][0]
    for second in (1, 2):  # keyframe s is frame s * 30 + 1, the same JPEG in both layouts
        ava_frame = tmp_path / "frames" / video / f"img_{second * 30 + 1:05d}.jpg"
        act_frame = tmp_path / "rgb-images" / video / f"{second * 30 + 1:05d}.jpg"
        assert os.path.samefile(ava_frame, act_frame) or ava_frame.read_bytes() == act_frame.read_bytes()
    assert (tmp_path / "annotations" / "Synth_val_excluded_timestamps.csv").read_text() == ""


def test_ava_rows_match_the_act_boxes(tmp_path):
    cfg = SynthConfig.preset("tiny", videos=1, frames=61, test_every=2)
    render_dataset(cfg, tmp_path, layout="ava")
    video = render_video(cfg, 0)
    rows = [r.split(",") for r in (tmp_path / "annotations" / "Synth_train.csv").read_text().splitlines()]
    for r in rows:
        actor = video.actors[int(r[7])]
        x1, y1, x2, y2 = actor.boxes[int(r[1]) * 30]
        expected = [x1 / cfg.width, y1 / cfg.height, (x2 + 1) / cfg.width, (y2 + 1) / cfg.height]
        assert np.allclose([float(v) for v in r[2:6]], expected, atol=5e-5)
        if actor.start <= int(r[1]) * 30 + 1 <= actor.end and int(r[6]) <= len(CLASS_NAMES):
            assert int(r[6]) == actor.label + 1
    assert not (tmp_path / "rgb-images").exists() and (tmp_path / "frames" / video.name / "img_00061.jpg").is_file()


def test_ava_layout_needs_two_keyframes(tmp_path):
    with pytest.raises(StadError, match="frames >= 61"):
        render_dataset(SynthConfig.preset("tiny"), tmp_path, layout="ava")


def test_act_files_round_trip(tmp_path):
    cfg = SynthConfig.preset("tiny", videos=4, classes=("squat", "walk", "spin"))
    ann = render_dataset(cfg, tmp_path)
    assert ann.labels == ["walk", "squat", "spin"]  # canonical order
    with open(tmp_path / "Synth-GT.pkl", "rb") as fh:
        gt = pickle.load(fh)
    assert set(gt) >= {"labels", "gttubes", "nframes", "train_videos", "test_videos", "resolution"}
    assert gt["resolution"]["video_00000"] == (96, 128) and gt["nframes"]["video_00000"] == 32
    assert gt["test_videos"] == [["video_00003"]] and gt["train_videos"] == [["video_00000", "video_00001",
                                                                             "video_00002"]]
    with open(tmp_path / "Synth-visibility.pkl", "rb") as fh:
        vis = pickle.load(fh)
    for video, tubes in gt["gttubes"].items():
        for label, tube_list in tubes.items():
            assert [len(v) for v in vis[video][label]] == [len(t) for t in tube_list]
    loaded = load_annotations(tmp_path)
    assert loaded.labels == ann.labels and loaded.nframes == ann.nframes
    assert all(np.array_equal(a, b) for v in ann.gttubes for k in ann.gttubes[v]
               for a, b in zip(ann.gttubes[v][k], loaded.gttubes[v][k]))
    for i in range(cfg.frames):
        assert (tmp_path / "rgb-images" / "video_00002" / f"{i + 1:05d}.jpg").is_file()


def test_act_files_load_with_the_act_reader(tmp_path):
    act = pytest.importorskip("stad.data.act", reason="stad.data.act not available")
    ann = render_dataset(SynthConfig.preset("tiny", videos=2), tmp_path)
    loaded = act.load_act(tmp_path / "Synth-GT.pkl")
    assert loaded.labels == ann.labels and loaded.test_videos == ann.test_videos
    assert act.check_act(loaded) == []


def test_summary_counts():
    cfg = SynthConfig.preset("tiny", videos=4)
    from stad.structures import TubeAnnotations

    ann = TubeAnnotations(labels=["a", "b"], gttubes={"v": {0: [np.zeros((3, 5)), np.zeros((5, 5))]}},
                          nframes={"v": 10}, resolution={"v": (4, 4)}, train_videos=[["v"]], test_videos=[[]],
                          visibility={"v": {0: [np.array([1.0, 0.96, 0.5]), np.array([0.2, 0.94, 1, 1, 0.0])]}})
    summary = summarize(ann)
    assert summary.tubes_per_label == {"a": 2, "b": 0} and summary.mean_tube_length == 4.0
    assert list(summary.visibility_bands.values()) == [4, 2, 2]
    assert "fully visible" in summary.format()
    assert cfg.videos == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(classes=("walk", "dance")), "subset"),
    (dict(occlusion=1.5), "occlusion"),
    (dict(actors=(2, 1)), "actors"),
    (dict(frames=5), "frames"),
])
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(StadError, match=message):
        SynthConfig.preset("tiny", **kwargs)


def test_unknown_preset():
    with pytest.raises(StadError, match="unknown synthetic preset 'huge'"):
        SynthConfig.preset("huge")


def test_ava_layout_passes_the_ava_reader_and_validator(tmp_path):
    ava = pytest.importorskip("stad.data.ava", reason="stad.data.ava not available")
    cfg = SynthConfig.preset("tiny", videos=4, frames=91)
    render_dataset(cfg, tmp_path, layout="ava")
    assert ava.validate_ava(tmp_path) == []
    labelmap = ava.read_labelmap(tmp_path / "annotations" / "Synth_action_list.pbtxt")
    keyframes = ava.read_keyframes(tmp_path / "annotations" / "Synth_train.csv", labelmap)
    assert {k.timestamp for k in keyframes} == {1, 2, 3}
    for keyframe in keyframes:
        pose = keyframe.labels[:, : len(CLASS_NAMES) + 1]  # the actions and "stand"
        assert (pose.sum(axis=1) == 1).all()
        assert (keyframe.person_ids >= 0).all()
