"""STEP's pure ops (stad.models.step_ops) against the facts of shared/methods/STEP.md §4-§8."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stad.boxes import box_iou
from stad.models.step_ops import (
    anchors_for_mode,
    batched_nms_plus_one,
    candidate_tubes,
    classification_loss,
    decode_boxes,
    demo_postprocess,
    encode_boxes,
    extend_tubes_predicted,
    extrapolate_tubes,
    generate_anchors,
    masked_smooth_l1,
    nms_plus_one,
    postprocess_keyframes,
    roi_pool_tubelets,
    sample_anchors,
    select_proposals,
    valid_tubes,
    warmup_cosine_factor,
)


# -- anchors (facts 1, 2, 6) ---------------------------------------------------------------------


def test_fact1_anchor_grid_x_major() -> None:
    anchors = generate_anchors([4 / 3, 2], [5 / 6, 3 / 4]) * 400
    assert anchors.shape == (34, 4)
    expected = [[x, y, x + 300, y + 300] for x in (0, 50, 100) for y in (0, 50, 100)]
    expected += [[x, y, x + 200, y + 200] for x in (0, 50, 100, 150, 200) for y in (0, 50, 100, 150, 200)]
    np.testing.assert_allclose(anchors, np.asarray(expected, float), atol=1e-9)
    np.testing.assert_allclose(anchors[[0, 3, 9, 27, 33]],
                               [[0, 0, 300, 300], [50, 0, 350, 300], [0, 0, 200, 200], [150, 150, 350, 350],
                                [200, 200, 400, 400]], atol=1e-9)


def test_fact1_anchor_mode_counts() -> None:
    assert [len(anchors_for_mode(m)) for m in (1, "2", "3", "4")] == [34, 59, 84, 109]
    np.testing.assert_array_equal(anchors_for_mode("1"), generate_anchors([4 / 3, 2], [5 / 6, 3 / 4]))
    for mode in "1234":
        a = anchors_for_mode(mode)
        assert (a >= 0).all() and (a <= 1).all()
    with pytest.raises(ValueError, match="anchor_mode"):
        anchors_for_mode(5)


def test_fact2_stride_at_scale_four_thirds() -> None:
    side = 1 / (4 / 3)
    assert side * (1 - 5 / 6) == 0.12499999999999997
    xs = sorted(set(generate_anchors([4 / 3], [5 / 6])[:, 0].round(12)))
    assert xs == [0.0, 0.125, 0.25]  # 3 positions, not 2


def test_fact6_training_iou_has_no_plus_one() -> None:
    anchors = generate_anchors([4 / 3, 2], [5 / 6, 3 / 4]) * 400
    assert box_iou(anchors[[0]], anchors[[9]], plus_one=False)[0, 0] == pytest.approx(40000 / 90000)
    assert box_iou(anchors[[4]], anchors[[21]], plus_one=False)[0, 0] == pytest.approx(4 / 9)


# -- box coding, valid tubes, extension ---------------------------------------------------------


def test_encode_decode_round_trip() -> None:
    g = torch.Generator().manual_seed(0)
    ref = torch.rand(50, 4, generator=g, dtype=torch.float64) * 100
    ref[:, 2:] += ref[:, :2] + 5
    boxes = torch.rand(50, 4, generator=g, dtype=torch.float64) * 100
    boxes[:, 2:] += boxes[:, :2] + 1
    torch.testing.assert_close(decode_boxes(ref, encode_boxes(boxes, ref)), boxes)
    # pixel-inclusive convention: a box relative to itself is 0; w = x2 - x1 + 1
    torch.testing.assert_close(encode_boxes(ref, ref), torch.zeros_like(ref))
    d = encode_boxes(torch.tensor([[0.0, 0, 19, 9]]), torch.tensor([[0.0, 0, 9, 9]]))
    torch.testing.assert_close(d, torch.tensor([[0.5, 0.0, math.log(2), 0.0]]))


def test_fact5_valid_tubes() -> None:
    out = valid_tubes(torch.tensor([[5.0, 5, 6, 300]]), width=400, height=400)
    torch.testing.assert_close(out, torch.tensor([[0.0, 0, 400, 400]]))
    boxes = torch.tensor([[-10.0, -5, 500, 420], [10, 10, 12.5, 50], [10, 10, 12, 50], [3, 3, 9, 5.5]])
    torch.testing.assert_close(valid_tubes(boxes, width=400, height=400),
                               torch.tensor([[0.0, 0, 400, 400], [10, 10, 12.5, 50], [0, 0, 400, 400], [3, 3, 9, 5.5]]))
    # the bounds follow the real input size; shapes (..., 4) keep their count
    tubes = torch.tensor([[[0.0, 0, 200, 200], [-4, 2, 140, 90]]])
    torch.testing.assert_close(valid_tubes(tubes, width=128, height=96), torch.tensor([[[0.0, 0, 128, 96], [0, 2, 128, 90]]]))
    assert valid_tubes(torch.zeros(0, 3, 4), width=10, height=10).shape == (0, 3, 4)


def test_extrapolation_example() -> None:
    x1 = torch.tensor([100.0, 110, 120])
    tube = torch.stack((x1, x1, x1 + 50, x1 + 50), dim=1)[None]  # [1, 3, 4]
    out = extrapolate_tubes(tube, num_frames=9, width=400, height=400)
    assert out.shape == (1, 9, 4)
    torch.testing.assert_close(out[0, :, 0], torch.tensor([70.0, 80, 90, 100, 110, 120, 130, 140, 150]))
    clamped = extrapolate_tubes(torch.tensor([[[5.0, 5, 380, 380], [3, 3, 390, 390], [1, 1, 398, 398]]]), num_frames=9,
                                width=400, height=400)
    assert clamped[..., :2].min() >= 0 and clamped[..., 2:].max() <= 399


def test_predicted_extension_decodes_from_the_input_frames() -> None:
    tubes = torch.tensor([[[10.0, 10, 50, 60], [12, 10, 52, 60], [14, 10, 54, 60]]])
    boxes = tubes + 1
    zero = torch.zeros(1, 3, 4)
    out = extend_tubes_predicted(tubes, boxes, zero, zero)
    assert out.shape == (1, 9, 4)
    torch.testing.assert_close(out[:, :3], tubes)
    torch.testing.assert_close(out[:, 3:6], boxes)
    torch.testing.assert_close(out[:, 6:], tubes)


# -- ROI pooling (fact 10) ------------------------------------------------------------------------


def test_fact10_roi_batch_index() -> None:
    from torchvision.ops import roi_align

    feats = torch.randn(2, 3, 9, 8, 8)
    tubes = torch.tensor([[[0.0, 0, 64, 64], [8, 8, 100, 120], [16, 0, 128, 64]]]).repeat(3, 1, 1)
    clip_index = torch.tensor([1, 0, 1])
    out = roi_pool_tubelets(feats, tubes, clip_index, t_start=3, pool_size=4)
    assert out.shape == (3, 3, 3, 4, 4)  # [N, C, K, P, P]
    maps = feats[:, :, 3:6].transpose(1, 2).reshape(6, 3, 8, 8)
    for n in range(3):
        for t in range(3):
            roi = torch.cat((torch.tensor([float(clip_index[n] * 3 + t)]), tubes[n, t]))[None]
            ref = roi_align(maps, roi, (4, 4), spatial_scale=1 / 16, sampling_ratio=0, aligned=False)[0]
            torch.testing.assert_close(out[n, :, t], ref)
            # the same as pooling the clip's own frame directly
            direct = roi_align(feats[clip_index[n], :, 3 + t][None], torch.cat((torch.zeros(1), tubes[n, t]))[None],
                               (4, 4), spatial_scale=1 / 16, sampling_ratio=0, aligned=False)[0]
            torch.testing.assert_close(out[n, :, t], direct)
    with pytest.raises(ValueError, match="do not fit"):
        roi_pool_tubelets(feats, torch.zeros(1, 9, 4), torch.zeros(1, dtype=torch.long), t_start=3, pool_size=2)


# -- candidates and sample selection (fact 14) -----------------------------------------------------


def test_candidate_tubes_top_per_class() -> None:
    base = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    probs = torch.stack((base, base - 0.1, base - 0.15, torch.tensor([0.1, 0.2, 0.3, 0.01, 0.02, 0.95, 0.03, 0.04])), dim=1)
    keep, score = candidate_tubes(probs[None], topk=8)  # 2 * floor(8 / 4) = 4 per class, A = 8 <= topk
    assert keep.tolist() == [[True, True, True, True, False, True, False, False]]
    torch.testing.assert_close(score[0, keep[0]], torch.tensor([0.9, 0.8, 0.7, 0.6, 0.95]))  # best class that kept it
    assert torch.isinf(score[0, ~keep[0]]).all()
    keep, _ = candidate_tubes(probs[None], topk=4)  # 2 per class: {0, 1} x 3 and {5, 2}
    assert keep.tolist() == [[True, True, True, False, False, True, False, False]]
    keep, _ = candidate_tubes(probs[None, :, :1], topk=2)  # 4 for the one class, then at most topk = 2 tubes
    assert keep.tolist() == [[True, True, False, False, False, False, False, False]]
    keep, score = candidate_tubes(torch.zeros(2, 0, 3), topk=300)
    assert keep.shape == (2, 0) and score.shape == (2, 0)


def test_forced_positives_even_at_zero_iou() -> None:
    gt = np.array([[0.0, 0, 10, 10], [100, 100, 120, 120]])
    cand = np.array([[50.0, 50, 60, 60], [0, 0, 10, 11], [200, 200, 220, 220]])
    sel = select_proposals(gt, cand, None, thresh=0.5, rng=np.random.default_rng(0))
    assert sorted(zip(sel.pos_index.tolist(), sel.pos_gt.tolist())) == [(0, 1), (1, 0)] or \
        sorted(zip(sel.pos_index.tolist(), sel.pos_gt.tolist())) == [(1, 0), (2, 1)]
    assert len(sel.pos_index) == 2 and len(sel.neg_index) == 1  # min(2 * 2, 1 left)
    assert not set(sel.neg_index) & set(sel.pos_index)


@pytest.mark.parametrize("seed", range(6))
def test_fact14_sample_counts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    G = int(rng.integers(0, 9))  # noqa: N806
    xy = rng.uniform(0, 300, size=(G, 2))
    gt = np.concatenate((xy, xy + rng.uniform(20, 100, size=(G, 2))), axis=1)
    anchors = generate_anchors([4 / 3, 2], [5 / 6, 3 / 4]) * 400
    cand = anchors + rng.normal(0, 20, size=anchors.shape)
    scores = rng.uniform(0, 1, size=len(cand))
    for thresh, sc in ((0.2, None), (0.35, scores), (0.5, scores)):
        sel = select_proposals(gt, cand, sc, thresh=thresh, max_pos=5, neg_ratio=2, rng=rng)
        P, Q = len(sel.pos_index), len(sel.neg_index)  # noqa: N806
        assert min(G, 5) <= P <= 5
        above = box_iou(gt, cand, plus_one=False).max(axis=0, initial=0.0) > thresh
        available = (~above).sum() - (~above[sel.pos_index]).sum()
        assert Q == min(2 * P, available)
        assert len(set(sel.index.tolist())) == P + Q  # no candidate twice
        assert not above[sel.neg_index].any()  # IoU > thr never negative
        if G:
            iou = box_iou(gt, cand, plus_one=False)
            np.testing.assert_array_equal(sel.neg_gt, iou[:, sel.neg_index].argmax(axis=0))
        assert (sel.sample_iou() >= 0).all()


def test_selection_is_reproducible_and_softmax_prefers_high_scores() -> None:
    gt = np.array([[0.0, 0, 50, 50]])
    cand = np.concatenate((gt, np.array([[200.0, 200, 260, 260]] * 40) + np.arange(40)[:, None]))
    scores = np.where(np.arange(41) % 2 == 0, 8.0, -8.0)
    a = select_proposals(gt, cand, scores, thresh=0.5, rng=np.random.default_rng(3))
    b = select_proposals(gt, cand, scores, thresh=0.5, rng=np.random.default_rng(3))
    np.testing.assert_array_equal(a.index, b.index)
    assert (np.asarray(a.neg_index) % 2 == 0).all()  # exp(8) / exp(-8): the high scores win
    u = select_proposals(gt, cand, scores, thresh=0.5, sampling="uniform", rng=np.random.default_rng(3))
    assert len(u.neg_index) == 2
    with pytest.raises(ValueError, match="sampling"):
        select_proposals(gt, cand, scores, thresh=0.5, sampling="nms", rng=np.random.default_rng(0))


def test_selection_with_no_gt_or_no_candidates() -> None:
    rng = np.random.default_rng(0)
    sel = select_proposals(np.zeros((0, 4)), np.ones((5, 4)), None, thresh=0.2, rng=rng)
    assert len(sel.index) == 0 and sel.iou.shape == (0, 5)
    sel = select_proposals(np.array([[0.0, 0, 5, 5]]), np.zeros((0, 4)), None, thresh=0.2, rng=rng)
    assert len(sel.index) == 0


def test_sample_anchors_rules() -> None:
    gt = np.array([[10.0, 10, 60, 110], [70, 20, 120, 100]])
    boxes = sample_anchors(gt, width=128, height=128, rng=np.random.default_rng(0))
    assert boxes.shape[0] >= 2 and boxes.shape[0] <= 5
    iou = box_iou(boxes, gt, plus_one=False)
    for g in range(2):
        assert iou[g, g] > 0.75 and np.delete(iou[g], g).max() < 0.2
    assert (iou[2:] < 0.2).all()
    assert (boxes >= 0).all() and (boxes[:, [0, 2]] <= 128).all()
    np.testing.assert_array_equal(sample_anchors(gt, width=128, height=128, rng=np.random.default_rng(0), train=False,
                                                 num_negatives=0), gt)


# -- losses ---------------------------------------------------------------------------------------


def test_losses_masked_means() -> None:
    pred = torch.tensor([[0.0, 0, 0, 0], [2.0, 0, 0, 0]], requires_grad=True)
    target = torch.zeros(2, 4)
    assert masked_smooth_l1(pred, target, torch.tensor([False, True])).item() == pytest.approx(1.5 / 4)
    empty = masked_smooth_l1(pred, target, torch.tensor([False, False]))
    assert empty.item() == 0 and empty.requires_grad
    logits = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    labels = torch.tensor([[1.0, 0], [1, 1]])
    assert classification_loss(logits, labels, torch.tensor([True, False])).item() == pytest.approx(math.log(2))
    assert classification_loss(logits, labels, torch.tensor([False, False])).item() == 0


# -- post-processing (§6) -------------------------------------------------------------------------


def test_nms_plus_one_areas_and_ge_threshold() -> None:
    # continuous IoU 0.5 * 10 x 10 ...: two boxes 10 px apart, +1 areas give IoU 11*1/.. computed below
    boxes = torch.tensor([[0.0, 0, 9, 9], [5, 0, 14, 9]])
    scores = torch.tensor([0.9, 0.8])
    iou_plus_one = (5 * 10) / (100 + 100 - 50)  # inter (9-5+1) x 10 = 50, areas 100
    iou_plain = (4 * 9) / (81 + 81 - 36)
    assert iou_plus_one == pytest.approx(1 / 3) and iou_plain < iou_plus_one
    assert nms_plus_one(boxes, scores, iou_plus_one).tolist() == [0]  # IoU == thr suppresses (CPU kernel)
    assert nms_plus_one(boxes, scores, iou_plus_one + 1e-6).tolist() == [0, 1]
    assert nms_plus_one(boxes, scores, (iou_plain + iou_plus_one) / 2).tolist() == [0]  # +1 areas decide
    assert nms_plus_one(torch.zeros(0, 4), torch.zeros(0), 0.4).shape == (0,)


def test_batched_nms_matches_greedy_reference() -> None:
    g = torch.Generator().manual_seed(1)
    boxes = torch.rand(3, 20, 4, generator=g) * 60
    boxes[..., 2:] += boxes[..., :2] + 10
    scores = torch.rand(3, 20, generator=g)
    valid = scores > 0.2
    keep = batched_nms_plus_one(boxes, scores, valid, 0.4)
    for s in range(3):
        order = [i for i in scores[s].argsort(descending=True).tolist() if valid[s, i]]
        kept: list[int] = []
        for i in order:
            b = boxes[s, i]
            ok = True
            for j in kept:
                c = boxes[s, j]
                iw = max(0.0, float(min(b[2], c[2]) - max(b[0], c[0]) + 1))
                ih = max(0.0, float(min(b[3], c[3]) - max(b[1], c[1]) + 1))
                area = lambda x: float((x[2] - x[0] + 1) * (x[3] - x[1] + 1))  # noqa: E731
                if iw * ih / (area(b) + area(c) - iw * ih) >= 0.4:
                    ok = False
                    break
            if ok:
                kept.append(i)
        assert sorted(kept) == torch.nonzero(keep[s]).reshape(-1).tolist()


def test_postprocess_keyframes() -> None:
    boxes = torch.tensor([[[0.0, 0, 100, 100], [5, 5, 100, 100], [200, 200, 300, 300], [10, 10, 11, 300]]])
    probs = torch.tensor([[[0.9, 0.005], [0.8, 0.3], [0.2, 0.02], [0.5, 0.6]]])
    dets = postprocess_keyframes(boxes, probs, width=400, height=400, conf_thresh=0.01, nms_thresh=0.4, top_n=300)
    assert len(dets) == 1
    d = dets[0]
    # class 0: box 1 suppressed by box 0; box 3 is degenerate -> full image, overlaps box 0 by IoU < 0.4
    rows = sorted(zip(d.labels.tolist(), np.round(d.scores, 6).tolist()))
    assert rows == [(0, 0.2), (0, 0.5), (0, 0.9), (1, 0.02), (1, 0.3), (1, 0.6)]
    assert (np.diff(d.scores) <= 0).all()
    assert d.boxes.dtype == np.float64 and d.labels.dtype == np.int64
    np.testing.assert_allclose(d.boxes[0], [0, 0, 0.25, 0.25])
    assert (d.boxes >= 0).all() and (d.boxes <= 1).all()
    top = postprocess_keyframes(boxes, probs, width=400, height=400, top_n=2)[0]
    np.testing.assert_allclose(top.scores, [0.9, 0.6], rtol=1e-6)
    none = postprocess_keyframes(boxes, probs * 0, width=400, height=400)[0]
    assert len(none) == 0 and none.boxes.shape == (0, 4)


def test_demo_postprocess_merges_across_classes() -> None:
    boxes = torch.tensor([[0.0, 0, 100, 100], [2, 2, 101, 101], [200, 200, 300, 300]])
    probs = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.7, 0.5], [0.0, 0.0, 0.45]])
    d = demo_postprocess(boxes, probs, width=400, height=400)
    assert d.labels.tolist() == [0, 1, 2, 2] and np.allclose(d.scores, [0.9, 0.7, 0.5, 0.45])
    mean = (np.array([0, 0, 100, 100]) + 2 * np.array([2, 2, 101, 101])) / 3 / 400  # mean over the member rows
    for row in range(3):
        np.testing.assert_allclose(d.boxes[row], mean)
    np.testing.assert_allclose(d.boxes[3], [0.5, 0.5, 0.75, 0.75])
    assert len(demo_postprocess(boxes, probs * 0.1, width=400, height=400)) == 0


# -- schedule (fact 16) ---------------------------------------------------------------------------


def test_fact16_warmup_cosine() -> None:
    total = 5000
    lr = lambda i: 7.5e-4 * warmup_cosine_factor(i, warmup_iters=1000, total_iters=total)  # noqa: E731
    assert lr(0) == pytest.approx(7.5e-5)
    assert lr(500) == pytest.approx(4.125e-4)
    assert lr(1000) == pytest.approx(7.5e-4)
    assert lr(3000) == pytest.approx(3.75e-4)
    assert lr(total) == pytest.approx(0.0, abs=1e-12)
    assert lr(total + 10) == 0.0
