"""STEP detector, heads, classification model and checkpoints on a tiny divisor-8 model (shared/methods/STEP.md §8)."""

from __future__ import annotations

import argparse
import copy
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from stad.errors import StadError
from stad.models.backbones.i3d import STEP_BASE_NET_INDEX, InceptionI3D, mixed5
from stad.models.checkpoints import load_step_release, read_step_cls_state_dict
from stad.models.heads.step import ContextNet, TwoBranchHead
from stad.models.registry import MODELS
from stad.models.step import (
    STEPDetector,
    _selection_rng,
    build_step,
    build_step_cls,
    load_step_cls_weights,
    step_param_groups,
)
from stad.models.step_ops import postprocess_keyframes
from stad.structures import KeyframeDetections

SIZE = 64  # keeps every mechanism (4x4 map, 2x2 context, 34 anchors, 3 steps) at a fraction of 128²'s cost
C = 4
TINY = {"channel_divisor": 8, "fc_dim": 16, "bottleneck_mid": 32, "bottleneck_out": 128, "pool_size": 4, "input_size": SIZE}


def tiny_cfg(**options: object) -> SimpleNamespace:
    return SimpleNamespace(name="step", num_classes=C, options={**TINY, **options}, weights=None)


def make_batch(size: int = SIZE) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    f = size / 128
    boxes = torch.tensor([[[10.0, 20, 60, 100], [70, 30, 120, 120]], [[30, 30, 90, 110], [0, 0, 0, 0]]]) * f
    nb = torch.stack((boxes - torch.tensor([6.0, 0, 6, 0]) * f, boxes + torch.tensor([6.0, 0, 6, 0]) * f), dim=2)
    return {
        "clip": torch.rand(2, 36, 3, size, size, generator=g) * 2 - 1,
        "boxes": boxes,
        "labels": torch.tensor([[[1.0, 0, 1, 0], [0, 1, 0, 0]], [[0, 0, 0, 1], [0, 0, 0, 0]]]),
        "mask": torch.tensor([[True, True], [True, False]]),
        "neighbor_boxes": nb,
        "neighbor_valid": torch.tensor([[[True, True], [True, False]], [[True, True], [False, False]]]),
    }


@pytest.fixture(scope="module", autouse=True)
def _one_thread_for_module_fixtures():
    """Module fixtures run before conftest's per-test one-thread fixture: keep them on one thread too."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model() -> STEPDetector:
    torch.manual_seed(0)
    return build_step(tiny_cfg())


@pytest.fixture(scope="module")
def trained(model: STEPDetector) -> dict[str, object]:
    """One training forward + backward (shared by the loss and gradient tests)."""
    model.train()
    model.zero_grad()
    torch.manual_seed(1)
    losses = model(make_batch())
    losses["loss"].backward()
    grads = {name: None if p.grad is None else p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()
    model.eval()
    return {"losses": {k: v.detach() for k, v in losses.items()}, "grads": grads}


@pytest.fixture(scope="module")
def detections(model: STEPDetector) -> list[list[KeyframeDetections]]:
    model.eval()
    return model.detect(make_batch())


# -- shapes (facts 8, 9, 10, 11) ----------------------------------------------------------------------


def test_fact8_feature_and_context_shapes() -> None:
    with torch.device("meta"):  # the paper-sized network, shapes only
        backbone = InceptionI3D()
        context = ContextNet(mixed5(backbone.out_channels))
        feats = backbone.forward_features(torch.empty(2, 36, 3, 400, 400).transpose(1, 2))
        assert feats.shape == (2, 832, 9, 25, 25)  # STEP's [B, 9, 832, 25, 25] with channels first
        assert context(feats).shape == (2, 1024, 9)  # STEP's [B, 1024, 9, 1, 1]
    tiny = InceptionI3D(channel_divisor=8)
    ctx = ContextNet(mixed5(tiny.out_channels, channel_divisor=8))
    with torch.no_grad():
        small = tiny.forward_features(torch.zeros(1, 3, 36, 128, 128))
        assert small.shape == (1, 104, 9, 8, 8)  # 128² -> 8x8 map
        assert ctx.pool(small).shape[-2:] == (4, 4)  # 4x4 before the context mean
        assert ctx(small).shape == (1, 128, 9)


def test_fact9_global_classifier_width_and_linearity() -> None:
    with torch.device("meta"):
        full = TwoBranchHead(mixed5=mixed5(832), in_channels=832, context_channels=1024, num_classes=60)
        shapes = {k: tuple(v.shape) for k, v in full.state_dict().items() if not k.startswith("i3d_conv.")}
    assert shapes["global_cls.weight"] == (60, 13568, 1, 1, 1)  # 256*7*7 + 1024
    assert shapes["downsample.weight"] == (256, 1024, 1, 1, 1)
    assert shapes["local_conv.0.conv1.weight"] == (1024, 1088, 1, 1)
    assert shapes["local_conv.0.conv2.weight"] == (256, 1088, 1, 1)
    assert shapes["local_conv.0.conv3.weight"] == (256, 256, 3, 3)
    assert shapes["local_conv.0.conv4.weight"] == (1024, 256, 1, 1)
    assert shapes["local_conv.1.conv1.weight"] == (256, 1024, 1, 1)
    assert shapes["local_conv.2.conv2.weight"] == (256, 256, 3, 3)
    assert shapes["local_conv.2.conv3.weight"] == (1024, 256, 1, 1)
    assert shapes["downsample2.weight"] == (256, 1024, 1, 1)
    for name in ("local_reg", "neighbor_reg1", "neighbor_reg2"):
        assert shapes[f"{name}.weight"] == (4, 12544) and shapes[f"{name}.bias"] == (4,)
    torch.manual_seed(0)
    head = TwoBranchHead(mixed5=mixed5(104, channel_divisor=8), in_channels=104, context_channels=128, num_classes=C,
                         fc_dim=16, pool_size=7, mid_channels=32, local_channels=128).eval()
    assert head.global_cls.weight.shape[1] == 16 * 49 + 128 == 912
    roi, ctx = torch.randn(3, 104, 9, 7, 7), torch.randn(3, 128, 9)
    with torch.no_grad():
        out = head(roi, ctx)
        d = head.downsample(head.i3d_conv(roi))  # [3, 16, 9, 7, 7]
        feat = torch.cat((d.transpose(1, 2).reshape(3, 9, -1), ctx.transpose(1, 2)), dim=2)  # (c, y, x) ++ context
        W, b = head.global_cls.weight.flatten(1), head.global_cls.bias  # noqa: N806
        torch.testing.assert_close(out.logits, feat.mean(dim=1) @ W.T + b, rtol=1e-4, atol=1e-4)
    assert out.local_loc.shape == (3, 9, 4) and out.first_loc.shape == (3, 3, 4) and out.last_loc.shape == (3, 3, 4)


def test_fact10_11_step_tubelet_shapes(model: STEPDetector, detections: list[list[KeyframeDetections]]) -> None:
    assert model.chunks == (1, 1, 3) and model.t_starts == (3, 3, 0) and model.extends == (False, True, False)
    assert len(model.anchors) == 34
    model.eval()
    with torch.no_grad():
        results = model._head_outputs(make_batch()["clip"])
    assert [tuple(r.tubes.shape[1:]) for r in results] == [(34, 3, 4), (34, 3, 4), (34, 9, 4)]
    assert [r.boxes.shape[2] // 2 for r in results] == [1, 1, 4]  # evaluated box index T_len // 2
    torch.testing.assert_close(results[0].tubes[0, :, 1], model.anchors * SIZE)  # anchors scale with W, H
    torch.testing.assert_close(results[1].tubes, results[0].next_tubes)
    torch.testing.assert_close(results[2].tubes, results[1].next_tubes)
    assert results[2].next_tubes is None
    tubes = results[2].tubes
    assert tubes[..., :2].min() >= 0 and tubes[..., 2].max() <= SIZE and tubes[..., 3].max() <= SIZE  # valid_tubes
    # detect reads the middle frame of each step's refined tubelets
    for step, res in enumerate(results):
        ref = postprocess_keyframes(res.boxes[:, :, res.boxes.shape[2] // 2], res.probs, width=SIZE, height=SIZE)
        for a, b in zip(detections[step], ref):
            np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-5)
            np.testing.assert_array_equal(a.labels, b.labels)


def test_temporal_extension_modes(model: STEPDetector) -> None:
    tubes = torch.tensor([[[[10.0, 10, 30, 40], [12, 10, 32, 40], [14, 10, 34, 40]]]])  # [1, 1, 3, 4]
    zero = torch.zeros(1, 1, 3, 4)
    out = SimpleNamespace(first_loc=zero, last_loc=zero)
    grown = model.next_tubes(1, tubes, tubes, out, SIZE, SIZE)
    assert grown.shape == (1, 1, 9, 4)
    torch.testing.assert_close(grown[0, 0, :3], tubes[0, 0])
    torch.testing.assert_close(grown[0, 0, 6:], tubes[0, 0])
    extrapolated = build_step(tiny_cfg(temporal_mode="extrapolate"))
    lin = extrapolated.next_tubes(1, tubes, tubes, out, SIZE, SIZE)
    torch.testing.assert_close(lin[0, 0, :, 0], torch.tensor([4.0, 6, 8, 10, 12, 14, 16, 18, 20]))
    torch.testing.assert_close(model.next_tubes(0, tubes, tubes, out, SIZE, SIZE), tubes)  # step 1 -> 2: same length


# -- training (facts 14, 15) --------------------------------------------------------------------------


def test_losses_finite_and_named(model: STEPDetector, trained: dict) -> None:
    losses = dict(trained["losses"])
    total = losses.pop("loss")
    assert list(losses) == model.loss_names == [
        "step1_cls", "step1_reg", "step2_cls", "step2_reg", "step2_neighbor", "step3_cls", "step3_reg"]
    torch.testing.assert_close(total, sum(losses.values()))  # the parts are already weighted
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name
        assert value.item() > 0, name
    assert losses["step2_neighbor"].item() > 0  # fact 15: the neighbour loss exists at step 2 only


def test_backward_reaches_backbone_context_and_heads(trained: dict) -> None:
    grads = trained["grads"]
    must = ["backbone.conv3d_1a_7x7.conv3d.weight", "backbone.mixed_4f.branch_0.conv3d.weight",
            "context_net.i3d_conv.mixed_5c.branch_0.conv3d.weight"]
    for k in range(3):
        must += [f"heads.{k}.i3d_conv.mixed_5b.branch_1.1.conv3d.weight", f"heads.{k}.global_cls.weight",
                 f"heads.{k}.downsample.bias", f"heads.{k}.local_conv.0.conv3.weight", f"heads.{k}.local_reg.weight"]
    must += ["heads.1.neighbor_reg1.weight", "heads.1.neighbor_reg2.weight"]
    for name in must:
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
        assert torch.isfinite(grads[name]).all(), name
    for k in (0, 2):  # no neighbour supervision at steps 1 and 3
        assert grads[f"heads.{k}.neighbor_reg1.weight"] is None or grads[f"heads.{k}.neighbor_reg1.weight"].abs().sum() == 0


def test_fact14_15_step_samples(model: STEPDetector) -> None:
    batch = make_batch()
    from stad.models.step import _GroundTruth

    gt = _GroundTruth.from_batch(batch, C)
    tubes = model.initial_tubes(2, SIZE, SIZE)
    keep = torch.ones(2, 34, dtype=torch.bool)
    score = torch.rand(2, 34, generator=torch.Generator().manual_seed(0))
    for step in range(3):
        t = tubes if step < 2 else torch.cat((tubes, tubes, tubes), dim=2)  # [2, 34, 9, 4] at step 3
        s = model._select(step, t, keep, None if step == 0 else score, gt, np.random.default_rng(step))
        for b, num_gt in ((0, 2), (1, 1)):
            rows = s.clip_index == b
            pos = int((s.cls_flag & rows).sum())
            neg = int((~s.cls_flag & rows).sum())
            assert min(num_gt, 5) <= pos <= 5 and neg <= 2 * pos
        assert s.tubes.shape[1:] == t.shape[2:]
        assert (s.labels[~s.cls_flag] == 0).all() and (s.labels[s.cls_flag].sum(dim=1) > 0).all()
        assert s.reg_flag[s.cls_flag].all()
        if step == 1:
            assert s.neighbor_flag[s.cls_flag].any() and not s.neighbor_flag[~s.cls_flag].any()
        else:
            assert not s.neighbor_flag.any()  # step-1 and step-3 neighbour rows are zero


def test_selection_reproducible_under_manual_seed() -> None:
    torch.manual_seed(5)
    a = _selection_rng(None).integers(0, 1 << 30, 4)
    torch.manual_seed(5)
    b = _selection_rng(None).integers(0, 1 << 30, 4)
    np.testing.assert_array_equal(a, b)


def test_loss_div_by_steps_and_empty_batch() -> None:
    torch.manual_seed(0)
    m = build_step(tiny_cfg(loss_div_by_steps=True, num_steps=2, thresholds=[0.2, 0.5]))
    assert m.chunks == (1, 3) and m.loss_names == ["step1_cls", "step1_reg", "step1_neighbor", "step2_cls", "step2_reg"]
    batch = make_batch()
    batch["clip"] = batch["clip"][:1]
    for key in ("boxes", "labels", "mask", "neighbor_boxes", "neighbor_valid"):
        batch[key] = batch[key][:1, :0]  # no actor at all
    losses = m(batch)
    assert list(losses) == ["loss", *m.loss_names] and all(v.item() == 0 for v in losses.values())
    losses["loss"].backward()  # still a graph


# -- detection -------------------------------------------------------------------------------------


def test_detect_shapes_and_ranges(detections: list[list[KeyframeDetections]]) -> None:
    assert len(detections) == 3 and all(len(step) == 2 for step in detections)
    for step in detections:
        for det in step:
            assert isinstance(det, KeyframeDetections)
            assert det.boxes.shape == (len(det), 4) and det.boxes.dtype == np.float64
            assert det.labels.dtype == np.int64 and det.scores.dtype == np.float64
            assert 0 < len(det) <= 300
            assert (det.boxes >= 0).all() and (det.boxes <= 1).all()
            assert (det.boxes[:, 2] > det.boxes[:, 0]).all() and (det.boxes[:, 3] > det.boxes[:, 1]).all()
            assert ((det.labels >= 0) & (det.labels < C)).all()
            assert (det.scores > 0.01).all() and (det.scores <= 1).all() and (np.diff(det.scores) <= 0).all()


def test_detect_batched_equals_per_clip(model: STEPDetector, detections: list[list[KeyframeDetections]]) -> None:
    batch = make_batch()
    for b in range(2):
        single = model.detect({"clip": batch["clip"][b:b + 1]}, top_n=300)
        for step in range(3):
            a, s = detections[step][b], single[step][0]
            assert len(a) == len(s)
            np.testing.assert_allclose(a.scores, s.scores, atol=1e-5)
            np.testing.assert_allclose(a.boxes, s.boxes, atol=1e-5)
            np.testing.assert_array_equal(a.labels, s.labels)


def test_detect_ignores_train_mode_and_top_n(model: STEPDetector, detections: list[list[KeyframeDetections]]) -> None:
    model.train()
    try:
        again = model.detect(make_batch()["clip"][:1], top_n=5, conf_thresh=0.2)
    finally:
        model.eval()
    assert model.training is False
    for step in range(3):
        for a, b in zip(again[step], detections[step][:1]):
            keep = b.scores > 0.2
            np.testing.assert_allclose(a.scores, b.scores[keep][:5], atol=1e-6)


# -- classification pre-training -----------------------------------------------------------------------


def test_step_cls_forward_and_detect() -> None:
    torch.manual_seed(0)
    cls_model = build_step_cls(SimpleNamespace(num_classes=C, options={"channel_divisor": 8, "fc_dim": 16, "pool_size": 4,
                                                                      "input_size": SIZE}, weights=None))
    assert cls_model.head.cls_only and not hasattr(cls_model.head, "local_reg")
    batch = make_batch()
    cls_model.train()
    out = cls_model(batch, rng=np.random.default_rng(0))
    assert list(out) == ["loss", "cls"] and torch.isfinite(out["cls"]) and out["cls"].item() > 0
    out["loss"].backward()
    assert cls_model.backbone.conv3d_1a_7x7.conv3d.weight.grad.abs().sum() > 0
    assert cls_model.head.global_cls.weight.grad.abs().sum() > 0
    cls_model.eval()
    dets = cls_model.detect(batch, conf_thresh=0.0)
    assert len(dets) == 1 and len(dets[0]) == 2
    assert len(dets[0][0]) == 2 * C and len(dets[0][1]) == C  # every GT box x every class
    np.testing.assert_allclose(np.unique(dets[0][1].boxes, axis=0), (batch["boxes"][1, :1] / SIZE).double().numpy())
    assert (np.diff(dets[0][0].scores) <= 0).all()


# -- builders and optimiser groups (fact 16) -----------------------------------------------------------


def test_registry_and_options() -> None:
    assert MODELS["step"] is build_step and MODELS["step_cls"] is build_step_cls
    with pytest.raises(StadError, match="bogus"):
        build_step(tiny_cfg(bogus=1))
    with pytest.raises(StadError, match="thresholds"):
        build_step(tiny_cfg(thresholds=[0.2, 0.5]))
    with pytest.raises(StadError, match="temporal_mode"):
        build_step(tiny_cfg(temporal_mode="mean"))
    with pytest.raises(StadError, match="channel_divisor"):
        build_step(tiny_cfg(channel_divisor=3))
    with pytest.raises(StadError, match="bogus"):
        build_step_cls(SimpleNamespace(num_classes=C, options={"bogus": 1}, weights=None))


def test_fact16_param_groups(model: STEPDetector) -> None:
    groups = step_param_groups(model, base_lr=7.5e-5, det_lr0=1.5e-4, det_lr=7.5e-4, weight_decay=1e-7)
    by_name = {g["name"]: g for g in groups}
    assert by_name["conv3d_1a_7x7.weight"]["lr"] == pytest.approx(7.5e-5 / 8)
    assert by_name["conv3d_2b_1x1.weight"]["lr"] == pytest.approx(7.5e-5 / 4)
    assert by_name["conv3d_2c_3x3.weight"]["lr"] == pytest.approx(7.5e-5 / 4)
    assert by_name["mixed_3b.weight"]["lr"] == pytest.approx(7.5e-5 / 2)
    assert by_name["mixed_4f.weight"]["lr"] == pytest.approx(7.5e-5)
    assert by_name["mixed5.weight"]["lr"] == pytest.approx(1.5e-4)
    assert by_name["head.weight"]["lr"] == pytest.approx(7.5e-4) and by_name["head.weight"]["weight_decay"] == 1e-7
    assert by_name["head.bias"]["lr"] == pytest.approx(1.5e-3) and by_name["head.bias"]["weight_decay"] == 0.0
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(ids) == len(set(ids)) == len(trainable)
    mixed5_ids = {id(p) for p in by_name["mixed5.weight"]["params"]}
    assert id(model.context_net.i3d_conv.mixed_5b.branch_0.conv3d.weight) in mixed5_ids
    assert id(model.heads[2].i3d_conv.mixed_5c.branch_3[1].conv3d.weight) in mixed5_ids
    assert id(model.heads[0].global_cls.weight) in {id(p) for p in by_name["head.weight"]["params"]}
    # frozen batch norm has no parameters at all
    assert not any("batch3d" in n for n, _ in model.named_parameters())
    defaults = {g["name"]: g for g in model.param_groups(7.5e-5, 1e-7)}  # the trainer's call
    assert defaults["mixed5.weight"]["lr"] == pytest.approx(1.5e-4) and defaults["head.weight"]["lr"] == pytest.approx(7.5e-4)
    assert defaults["head.weight"]["weight_decay"] == 1e-7 and defaults["head.bias"]["weight_decay"] == 0
    torch.optim.Adam(groups)  # accepted as is


# -- facts 17, 18 (CSV number format and label order used with STEP's outputs) ------------------------


def test_fact17_csv_number_format() -> None:
    assert "{:.4}".format(0.99999) == "1.0" and "{:.4}".format(0.123456) == "0.1235"
    assert "{:04}".format(902) == "0902"


def test_fact18_label_index_to_ava_id(realdata) -> None:
    from stad.data.ava import read_labelmap

    labelmap = read_labelmap(realdata / "ava" / "ava_action_list_v2.1_for_activitynet_2018.pbtxt.txt")
    ids = sorted(labelmap.ids)  # STEP's class index i = the i-th smallest id
    assert len(ids) == 60 and ids[0] == 1 and ids[1] == 3 and ids[59] == 80


# -- checkpoints --------------------------------------------------------------------------------------

_INDEX_OF = {name: i for i, name in STEP_BASE_NET_INDEX.items()}


def to_step_release(model: nn.Module) -> dict:
    """Write a stad STEP model's weights in STEP's released layout (STEP.md §9), as a test fixture."""
    sd = model.state_dict()
    base, context = {}, {}
    heads: dict[int, dict] = {}
    for key, value in sd.items():
        if key.startswith("backbone."):
            layer, rest = key[len("backbone."):].split(".", 1)
            base[f"module.base_model.{_INDEX_OF[layer]}.{rest}"] = value.clone()
            if rest.endswith("running_var"):
                base[f"module.base_model.{_INDEX_OF[layer]}.{rest[:-len('running_var')]}num_batches_tracked"] = torch.tensor(7)
        elif key.startswith("context_net.i3d_conv."):
            block, rest = key[len("context_net.i3d_conv."):].split(".", 1)
            context[f"module.i3d_conv_context.{1 if block == 'mixed_5b' else 2}.{rest}"] = value.clone()
        else:  # heads.{k}.* (detector) or head.* (classifier, det_net0)
            k = int(key.split(".")[1]) if key.startswith("heads.") else 0
            rest = key.split(".", 2)[2] if key.startswith("heads.") else key[len("head."):]
            if rest.startswith("i3d_conv."):
                block, tail = rest[len("i3d_conv."):].split(".", 1)
                rest = f"i3d_conv.{0 if block == 'mixed_5b' else 1}.{tail}"
            heads.setdefault(k, {})[rest] = value.clone()
    out = {"epochs": 3, "iteration": 10, "base_net": base, "context_net": context, "optimizer": {}, "scheduler": {},
           "val_mAP": 0.2, "cfg": argparse.Namespace(T=3, max_iter=len(heads), anchor_mode="1", temporal_mode="predict",
                                                     label_dict={1: 0, 3: 1}, image_size=(400, 400))}
    out.update({f"det_net{k}": v for k, v in heads.items()})
    return out


def test_release_checkpoint_round_trip(model: STEPDetector, tmp_path) -> None:
    path = tmp_path / "ava_step.pth"
    torch.save(to_step_release(model), path)
    torch.manual_seed(123)
    fresh = build_step(tiny_cfg())
    cfg = load_step_release(fresh, path)
    assert cfg["max_iter"] == 3 and cfg["temporal_mode"] == "predict"
    own, loaded = model.state_dict(), fresh.state_dict()
    assert own.keys() == loaded.keys()
    for key in own:
        torch.testing.assert_close(loaded[key], own[key], rtol=0, atol=0, msg=key)
    # the same through build(cfg.weights) and the registry
    again = MODELS["step"](SimpleNamespace(num_classes=C, options=TINY, weights=str(path)))
    torch.testing.assert_close(again.heads[2].local_reg.weight, model.heads[2].local_reg.weight)


def test_release_checkpoint_bad_files(model: STEPDetector, tmp_path) -> None:
    fresh = build_step(tiny_cfg())
    wrong_shape = to_step_release(model)
    wrong_shape["det_net1"]["global_cls.weight"] = torch.zeros(C, 5, 1, 1, 1)
    torch.save(wrong_shape, tmp_path / "shape.pth")
    with pytest.raises(StadError, match=r"heads\.1\.global_cls\.weight: file \(4, 5, 1, 1, 1\)"):
        load_step_release(fresh, tmp_path / "shape.pth")
    extra = to_step_release(model)
    extra["det_net2"]["extra_layer.weight"] = torch.zeros(3)
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(StadError, match=r"unexpected keys \['heads\.2\.extra_layer\.weight'\]"):
        load_step_release(fresh, tmp_path / "extra.pth")
    missing = to_step_release(model)
    del missing["det_net0"]["neighbor_reg2.bias"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(StadError, match=r"missing keys \['heads\.0\.neighbor_reg2\.bias'\]"):
        load_step_release(fresh, tmp_path / "missing.pth")
    base_extra = to_step_release(model)
    base_extra["base_net"]["module.base_model.4.weight"] = torch.zeros(1)
    torch.save(base_extra, tmp_path / "base.pth")
    with pytest.raises(StadError, match="base_model.4.weight"):
        load_step_release(fresh, tmp_path / "base.pth")
    two = to_step_release(model)
    del two["det_net2"]
    torch.save(two, tmp_path / "two.pth")
    with pytest.raises(StadError, match="2 heads"):
        load_step_release(fresh, tmp_path / "two.pth")
    torch.save({"state_dict": {}}, tmp_path / "other.pth")
    with pytest.raises(StadError, match="not a STEP release"):
        load_step_release(fresh, tmp_path / "other.pth")


def test_cls_weights_into_step(tmp_path) -> None:
    torch.manual_seed(0)
    cls_model = build_step_cls(SimpleNamespace(num_classes=C, options={"channel_divisor": 8, "fc_dim": 16, "pool_size": 4},
                                               weights=None))
    release = to_step_release(cls_model)
    assert {k.split(".")[0] for k in release["det_net0"]} == {"i3d_conv", "downsample", "global_cls"}  # global branch only
    path = tmp_path / "ava_cls.pth"
    torch.save(release, path)
    # ava_cls.pth -> the classification model, in full
    twin = build_step_cls(SimpleNamespace(num_classes=C, options={"channel_divisor": 8, "fc_dim": 16, "pool_size": 4},
                                          weights=str(path)))
    for key, value in cls_model.state_dict().items():
        torch.testing.assert_close(twin.state_dict()[key], value, msg=key)
    # -> the detector: trunk in full, i3d_conv + downsample into every head, global_cls re-initialised
    torch.manual_seed(1)
    det = build_step(tiny_cfg())
    before = copy.deepcopy(det.state_dict())
    load_step_cls_weights(det, cls_model.state_dict())
    sd = det.state_dict()
    for key, value in cls_model.state_dict().items():
        if key.startswith(("backbone.", "context_net.")):
            torch.testing.assert_close(sd[key], value, msg=key)
    for k in range(3):
        for key, value in cls_model.head.state_dict().items():
            ours = sd[f"heads.{k}.{key}"]
            if key.startswith("global_cls."):
                if key.endswith("weight"):
                    assert not torch.equal(ours, value) and not torch.equal(ours, before[f"heads.{k}.{key}"])
                else:
                    assert (ours == 0).all()
            else:
                torch.testing.assert_close(ours, value, msg=key)
        torch.testing.assert_close(sd[f"heads.{k}.local_reg.weight"], before[f"heads.{k}.local_reg.weight"])
    # the option cls_pretrained reads both layouts
    for file in (path, tmp_path / "stad_cls.pth"):
        if file.name == "stad_cls.pth":
            torch.save({"model": cls_model.state_dict(), "epoch": 1}, file)
        torch.testing.assert_close(read_step_cls_state_dict(file)["head.downsample.weight"], cls_model.head.downsample.weight)
        built = build_step(tiny_cfg(cls_pretrained=str(file)))
        torch.testing.assert_close(built.heads[1].downsample.weight, cls_model.head.downsample.weight)
    # ava_cls.pth given to load_step_release of a detector follows the same rule
    load_step_release(det, path)
    torch.testing.assert_close(det.heads[2].i3d_conv.mixed_5b.branch_0.conv3d.weight,
                               cls_model.head.i3d_conv.mixed_5b.branch_0.conv3d.weight)
    with pytest.raises(StadError, match="unexpected head keys"):
        load_step_cls_weights(det, {**cls_model.state_dict(), "head.local_reg.weight": torch.zeros(4, 256)})


def test_kinetics_weights_fill_every_mixed5_copy(tmp_path) -> None:
    torch.manual_seed(0)
    src = build_step(tiny_cfg())
    kinetics = {k[len("backbone."):]: v for k, v in src.state_dict().items() if k.startswith("backbone.")}
    kinetics.update({k[len("heads.0.i3d_conv."):]: v for k, v in src.state_dict().items() if k.startswith("heads.0.i3d_conv.")})
    kinetics["conv3d_0c_1x1.conv3d.weight"] = torch.zeros(400, 128, 1, 1, 1)
    kinetics["conv3d_0c_1x1.conv3d.bias"] = torch.zeros(400)
    torch.save(kinetics, tmp_path / "i3d_kinetics.pth")
    model = build_step(tiny_cfg(backbone_weights=str(tmp_path / "i3d_kinetics.pth")))
    ref = src.heads[0].i3d_conv.mixed_5c.branch_2[1].conv3d.weight
    for module in [model.context_net.i3d_conv] + [h.i3d_conv for h in model.heads]:
        torch.testing.assert_close(module.mixed_5c.branch_2[1].conv3d.weight, ref)
    torch.testing.assert_close(model.backbone.mixed_4e.branch_0.conv3d.weight, src.backbone.mixed_4e.branch_0.conv3d.weight)
    full = build_step(tiny_cfg())  # a file of another width fails with a clear message
    torch.save({**kinetics, "mixed_5c.branch_0.conv3d.weight": torch.zeros(1, 1, 1, 1, 1)}, tmp_path / "bad.pth")
    from stad.models.checkpoints import load_i3d_kinetics_weights

    with pytest.raises(StadError, match="mixed_5c.branch_0.conv3d.weight"):
        load_i3d_kinetics_weights(full, tmp_path / "bad.pth")
