"""`stad eval frame-map` and `stad eval video-map` end to end on tiny files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stad.cli import main
from stad.data.act import save_act
from stad.eval.predictions import write_frame_detections, write_tubes
from stad.structures import FrameDetections, Tube, TubeAnnotations, Tubelets


@pytest.fixture()
def gt_path(tmp_path):
    t = lambda first, last, box: np.array([[f, *box] for f in range(first, last + 1)], float)  # noqa: E731
    ann = TubeAnnotations(
        labels=["run", "jump"],
        gttubes={"v1": {0: [t(1, 20, (10, 10, 59, 59))]}, "v2": {1: [t(5, 24, (30, 30, 99, 99))]}},
        nframes={"v1": 30, "v2": 30},
        resolution={"v1": (120, 160), "v2": (120, 160)},
        train_videos=[[]],
        test_videos=[["v1", "v2"]],
    )
    path = tmp_path / "gt.pkl"
    save_act(ann, path)
    return path


def test_frame_map_cli(tmp_path, gt_path, capsys):
    # v1: perfect on frames 1..20; v2: boxes on frames 5..14 only (half the GT) plus one FP
    frames = list(range(1, 21)) + list(range(5, 15)) + [25]
    dets = FrameDetections(
        videos=["v1", "v2"],
        video=np.array([0] * 20 + [1] * 11),
        frame=np.array(frames),
        label=np.array([0] * 20 + [1] * 11),
        score=np.r_[np.full(20, 0.9), np.full(10, 0.8), 0.95],
        boxes=np.array([[10, 10, 59, 59]] * 20 + [[30, 30, 99, 99]] * 11, float),
    )
    write_frame_detections(dets, tmp_path / "d.csv")
    out = tmp_path / "out" / "fm.json"
    rc = main(["eval", "frame-map", "--gt", str(gt_path), "--detections", str(tmp_path / "d.csv"),
               "--json", str(out), "--plots", str(tmp_path / "plots"), "--errors"])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["per_class"]["run"] == pytest.approx(1.0)
    # jump: FP first, then 10 TP of 20 GT: (0,1) (0,0) ... (0.5, 10/11)
    jump = sum(0.05 * (p0 + p1) / 2 for p0, p1 in zip([0] + [k / (k + 1) for k in range(1, 10)], [k / (k + 1) for k in range(1, 11)]))
    assert res["per_class"]["jump"] == pytest.approx(jump, abs=1e-6)
    assert res["mAP"] == pytest.approx((1 + jump) / 2, abs=1e-6)
    assert "frame_mabo" in res and res["errors"]["mean"]["missed"] == pytest.approx(0.25)
    assert (tmp_path / "plots" / "frame_map_act_0.5_pr.png").stat().st_size > 0
    text = capsys.readouterr().out
    assert "frame-mAP@0.5 (act protocol)" in text and "mAP" in text
    rc = main(["eval", "frame-map", "--gt", str(gt_path), "--detections", str(tmp_path / "d.csv"),
               "--protocol", "yowo", "--json", str(out)])
    assert rc == 0 and json.loads(out.read_text())["per_class"]["jump"] == pytest.approx(0.5)
    # class-agnostic: one "actor" class; the same 30 TPs and 1 FP over 40 GT boxes, ranked FP .95 first
    rc = main(["eval", "frame-map", "--gt", str(gt_path), "--detections", str(tmp_path / "d.csv"), "--class-agnostic",
               "--json", str(out)])
    res = json.loads(out.read_text())
    assert rc == 0 and list(res["per_class"]) == ["actor"]
    actor = sum(0.025 * (p0 + p1) / 2 for p0, p1 in zip([0] + [k / (k + 1) for k in range(1, 30)], [k / (k + 1) for k in range(1, 31)]))
    assert res["mAP"] == pytest.approx(actor, abs=1e-6)


def test_frame_map_cli_from_tubelets(tmp_path, gt_path):
    from stad.tubes.tubelets import save_tubelets

    K = 5
    starts = np.arange(1, 17, K)  # 1, 6, 11, 16 -> frames 1..20
    tl = Tubelets(start=starts, label=np.zeros(len(starts), int), score=np.full(len(starts), 0.9),
                  boxes=np.tile(np.array([10, 10, 59, 59], float), (len(starts), K, 1)))
    save_tubelets(tmp_path / "t.npz", {"v1": tl}, videos=["v1", "v2"])
    out = tmp_path / "fm.json"
    assert main(["eval", "frame-map", "--gt", str(gt_path), "--tubelets", str(tmp_path / "t.npz"), "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["per_class"] == {"run": pytest.approx(1.0), "jump": 0.0}


def test_video_map_cli(tmp_path, gt_path, capsys):
    def tube(label, score, first, last, box):
        return Tube(label, score, np.array([[f, *box, score] for f in range(first, last + 1)], float))

    tubes = {"v1": [tube(0, 0.9, 1, 20, (10, 10, 59, 59))], "v2": [tube(1, 0.8, 5, 14, (30, 30, 99, 99))]}
    write_tubes(tubes, tmp_path / "t.json")
    out = tmp_path / "vm.json"
    rc = main(["eval", "video-map", "--gt", str(gt_path), "--tubes", str(tmp_path / "t.json"), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    # jump tube covers half the GT in time: ST-IoU 0.5
    assert res["mAP"] == {"0.2": 1.0, "0.5": 1.0, "0.75": 0.5, "0.5:0.95": pytest.approx(0.55)}
    assert res["per_class"]["jump"] == {"0.2": 1.0, "0.5": 1.0, "0.75": 0.0, "0.5:0.95": pytest.approx(0.1)}
    assert "@0.5:0.95" in capsys.readouterr().out
    assert main(["eval", "video-map", "--gt", str(gt_path), "--tubes", str(tmp_path / "t.json"), "--iou", "0.5"]) == 0


def test_cli_errors_are_one_line(tmp_path, gt_path, capsys):
    (tmp_path / "d.csv").write_text("video,frame,label,score,x1,y1,x2,y2\nv1,31,0,0.5,0,0,9,9\n")
    rc = main(["eval", "frame-map", "--gt", str(gt_path), "--detections", str(tmp_path / "d.csv")])
    err = capsys.readouterr().err
    assert rc == 2 and "d.csv:2: frame 31 outside 1..30" in err and err.count("\n") == 1
    rc = main(["eval", "frame-map", "--gt", str(tmp_path / "gt.txt"), "--detections", str(tmp_path / "d.csv")])
    assert rc == 2 and "unknown ground-truth format" in capsys.readouterr().err
    (tmp_path / "t.json").write_text('{"v9": []}')
    rc = main(["eval", "video-map", "--gt", str(gt_path), "--tubes", str(tmp_path / "t.json")])
    assert rc == 2 and "unknown video" in capsys.readouterr().err
    rc = main(["eval", "video-map", "--gt", str(gt_path), "--tubes", str(tmp_path / "none.json")])
    assert rc == 2 and "not found" in capsys.readouterr().err
