"""Real data: MultiSports ground truth + real per-keyframe predictions of a trained model (mmaction2 test data).

Predictions (data_samples.json) carry boxes normalized to [0, 1] and 66-way scores; each box becomes a
frame detection with label = argmax, score = max, box scaled by the video's resolution (720 x 1280).
The results of stad's vectorized frame-mAP are checked against a simple loop implementation written
here from the protocol text (ACT, and MultiSports' VOC variant).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from stad.data.act import load_act
from stad.eval.frame_map import frame_map
from stad.structures import FrameDetections

SUBDIR = "multisports/mmaction2_tests_eval_multisports"


@pytest.fixture(scope="module")
def multisports(realdata):
    gt = load_act(realdata / SUBDIR / "gt.pkl")
    samples = json.loads((realdata / SUBDIR / "data_samples.json").read_text())
    videos = gt.test_videos[0]
    rows = []
    for s in samples:
        video = s["video_id"].removesuffix(".mp4")
        h, w = gt.resolution[video]
        scores = np.array(s["pred_instances"]["scores"], np.float64)  # [n, 66]
        boxes = np.array(s["pred_instances"]["bboxes"], np.float64) * [w, h, w, h]  # [n, 4] pixels
        for sc, box in zip(scores, boxes):
            rows.append((videos.index(video), int(s["timestamp"]), int(sc.argmax()), float(sc.max()), *box))
    arr = np.array(rows)
    dets = FrameDetections(videos=list(videos), video=arr[:, 0].astype(int), frame=arr[:, 1].astype(int),
                           label=arr[:, 2].astype(int), score=arr[:, 3], boxes=arr[:, 4:8])
    return gt, dets


def _loop_frame_map(gt, dets, *, th, act: bool) -> tuple[float, dict[str, float]]:
    """Protocol text, one detection at a time (act: +1 IoU, best *unmatched*, trapezoid float32, all labels;
    voc: continuous IoU, best of all (taken -> FP), VOC all-point AP, labels with GT)."""
    video = gt.test_videos[0][0]
    one = 1.0 if act else 0.0
    score = dets.score.astype(np.float32) if act else dets.score
    boxes = dets.boxes.astype(np.float32).astype(np.float64) if act else dets.boxes
    aps = {}
    for c, name in enumerate(gt.labels):
        gtb = {}
        for t in gt.gttubes[video].get(c, []):
            for r in t:
                gtb.setdefault(int(r[0]), []).append(np.array(r[1:5]))
        n_gt = sum(len(v) for v in gtb.values())
        if not act and n_gt == 0:
            continue
        idx = np.flatnonzero(dets.label == c)
        order = idx[np.argsort(-score[idx])]
        used = {f: [False] * len(b) for f, b in gtb.items()}
        tps = []
        for i in order:
            f = int(dets.frame[i])
            b = boxes[i]
            best, best_iou = -1, -1.0
            for j, g in enumerate(gtb.get(f, [])):
                if act and used[f][j]:
                    continue
                iw = max(0.0, min(g[2], b[2]) - max(g[0], b[0]) + one)
                ih = max(0.0, min(g[3], b[3]) - max(g[1], b[1]) + one)
                inter = iw * ih
                iou = inter / ((g[2] - g[0] + one) * (g[3] - g[1] + one) + (b[2] - b[0] + one) * (b[3] - b[1] + one) - inter)
                if iou > best_iou:
                    best, best_iou = j, iou
            ok = best >= 0 and best_iou >= th and not used[f][best]
            if ok:
                used[f][best] = True
            tps.append(ok)
        tp = np.cumsum(tps)
        prec = tp / np.arange(1, len(tps) + 1)
        rec = tp / n_gt if n_gt else np.zeros(len(tps))
        if act:
            p = np.r_[1.0, prec if n_gt else np.zeros(len(tps))].astype(np.float32)
            r = np.r_[0.0, rec].astype(np.float32)
            aps[name] = float(np.sum((r[1:] - r[:-1]) * (p[1:] + p[:-1]) * np.float32(0.5)))
        else:
            r = np.r_[0.0, rec, 1.0]
            p = np.r_[0.0, prec, 0.0]
            for k in range(len(p) - 2, -1, -1):
                p[k] = max(p[k], p[k + 1])
            ch = np.flatnonzero(r[1:] != r[:-1]) + 1
            aps[name] = float(np.sum((r[ch] - r[ch - 1]) * p[ch]))
    if act:
        return float(np.mean(np.array(list(aps.values()), np.float32))), aps
    return float(np.mean(list(aps.values()))), aps


@pytest.mark.parametrize("th", [0.5, 0.2])
def test_multisports_frame_map_matches_loop(multisports, th):
    gt, dets = multisports
    assert len(dets) == 195 and len(gt.labels) == 66  # 112 keyframes, 1-2 boxes each
    act = frame_map(gt, dets, iou=th, protocol="act")
    voc = frame_map(gt, dets, iou=th, protocol="voc")
    act_loop, act_aps = _loop_frame_map(gt, dets, th=th, act=True)
    voc_loop, voc_aps = _loop_frame_map(gt, dets, th=th, act=False)
    print(f"\nMultiSports subset frame-mAP@{th}: ACT {100 * act.mAP:.4f} (mean over 66 labels), "
          f"VOC {100 * voc.mAP:.4f} (mean over {len(voc_aps)} labels with GT)")
    print("  per class (VOC):", {k: round(100 * v, 2) for k, v in voc_aps.items()})
    assert act.per_class == act_aps
    assert act.mAP == act_loop
    assert voc.mAP == pytest.approx(voc_loop, abs=1e-12)
    assert {k: v for k, v in voc.per_class.items() if np.isfinite(v)} == pytest.approx(voc_aps, abs=1e-12)
    assert len(voc_aps) == 4  # 4 labels have ground truth in this video
    # the ACT mean over all 66 labels is the VOC-style mean scaled by 4/66 up to the AP rule
    assert 0.0 < act.mAP < voc.mAP
