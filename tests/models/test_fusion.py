"""Two-stream late fusion (MOC's rule): fused maps, weight 1 = RGB alone, feature-reuse interface."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from stad.errors import StadError
from stad.models.decode import decode_moc
from stad.models.fusion import FusionWeights, TwoStreamDetector, fuse_maps, stream_maps
from stad.models.moc import ClipMeta, build_moc

K = 3


def _model(in_chans: int, seed: int):
    torch.manual_seed(seed)
    cfg = SimpleNamespace(name="moc", backbone="resnet18", num_classes=2, weights=None,
                          options={"K": K, "head_conv": 8, "wh_head_conv": 8, "width": 0.25, "deformable": False, "in_chans": in_chans})
    model = build_moc(cfg).eval()
    with torch.no_grad():  # make the heat-maps non-trivial (the default bias init gives ~0.1 everywhere)
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(scope="module")
def pair():
    return _model(3, 0), _model(6, 1)


def _frames(seed=0, T=K):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(T, 3 + 6, 32, 48, generator=g)


def test_fused_maps_follow_the_weighted_rule(pair):
    rgb, flow = pair
    weights = FusionWeights(heatmap=0.3, movement=0.6, wh=0.9)
    model = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=6, weights=weights).eval()
    frames = _frames()
    feats = model.frame_features(frames)[None]  # [1, K, C1 + C2, h, w]
    with torch.no_grad():
        fused = model.fused_maps(feats)
        r = rgb.head(rgb.frame_features(frames[:, :3])[None])
        f = flow.head(flow.frame_features(frames[:, 3:])[None])
    torch.testing.assert_close(fused.heat, 0.3 * torch.sigmoid(r.heatmap) + 0.7 * torch.sigmoid(f.heatmap))
    torch.testing.assert_close(fused.movement, 0.6 * r.movement + 0.4 * f.movement)
    torch.testing.assert_close(fused.wh, 0.9 * r.wh + 0.1 * f.wh)
    # the decoded tubelets are those of the fused maps
    tub = model.detect_from_features(feats, [ClipMeta(start=4, orig_size=(64, 96))])[0]
    dec = decode_moc(fused.heat, fused.movement, fused.wh, top_n=rgb.top_n)
    np.testing.assert_allclose(np.sort(tub.score)[::-1], dec.scores[0].numpy(), rtol=1e-6)
    assert np.all(tub.start == 4)


def test_flip_features_average_each_stream_before_fusion(pair):
    rgb, flow = pair
    model = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=6).eval()
    frames, flipped = _frames(0), _frames(1)
    feats, ffeats = model.frame_features(frames)[None], model.frame_features(flipped)[None]
    with torch.no_grad():
        fused = model.fused_maps(feats, ffeats)
        c = rgb.neck.out_channels
        r = stream_maps(rgb, feats[:, :, :c], ffeats[:, :, :c])
        f = stream_maps(flow, feats[:, :, c:], ffeats[:, :, c:])
        rf = rgb.head(ffeats[:, :, :c])
    torch.testing.assert_close(r.heat, (torch.sigmoid(rgb.head(feats[:, :, :c]).heatmap) + torch.sigmoid(rf.heatmap).flip(-1)) / 2)
    want = fuse_maps(r, f, FusionWeights())
    torch.testing.assert_close(fused.heat, 0.5 * r.heat + 0.5 * f.heat)
    torch.testing.assert_close(fused.movement, want.movement)
    torch.testing.assert_close(fused.wh, 0.8 * r.wh + 0.2 * f.wh)


def test_weight_one_equals_rgb_alone(pair):
    rgb, flow = pair
    model = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=6, weights=FusionWeights.uniform(1.0)).eval()
    frames = _frames(2)
    metas = [ClipMeta(start=1, orig_size=(64, 96))]
    fused = model.detect_from_features(model.frame_features(frames)[None], metas)[0]
    alone = rgb.detect_from_features(rgb.frame_features(frames[:, :3])[None], metas)[0]
    np.testing.assert_array_equal(fused.score, alone.score)
    np.testing.assert_array_equal(fused.label, alone.label)
    np.testing.assert_allclose(fused.boxes, alone.boxes, rtol=0, atol=1e-5)
    # and weight 0 is the flow stream alone
    model.weights = FusionWeights.uniform(0.0)
    fl = model.detect_from_features(model.frame_features(frames)[None], metas)[0]
    alone_flow = flow.detect_from_features(flow.frame_features(frames[:, 3:])[None], metas)[0]
    np.testing.assert_array_equal(fl.score, alone_flow.score)


def test_bad_inputs(pair):
    rgb, flow = pair
    with pytest.raises(StadError, match="outside"):
        FusionWeights(heatmap=1.5)
    model = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=6)
    with pytest.raises(ValueError, match=r"\(T, 9, H, W\)"):
        model.frame_features(torch.zeros(2, 3, 32, 32))
    other = _model(6, 2)
    other.K = K + 1
    with pytest.raises(StadError, match="differ in K"):
        TwoStreamDetector(rgb=rgb, flow=other, flow_channels=6)


def test_stado_streams_fuse_through_their_attention():
    from stad.models.stado import build_stado

    def stado(in_chans, seed):
        torch.manual_seed(seed)
        cfg = SimpleNamespace(name="stado", backbone="resnet18", num_classes=2, weights=None,
                              options={"K": K, "head_conv": 8, "wh_head_conv": 8, "width": 0.25, "deformable": False,
                                       "in_chans": in_chans})
        return build_stado(cfg).eval()

    rgb, flow = stado(3, 0), stado(6, 1)
    model = TwoStreamDetector(rgb=rgb, flow=flow, flow_channels=6, weights=FusionWeights.uniform(1.0)).eval()
    frames = _frames(3)
    metas = [ClipMeta(start=1, orig_size=(64, 96))]
    fused = model.detect_from_features(model.frame_features(frames)[None], metas)[0]
    alone = rgb.detect_from_features(rgb.frame_features(frames[:, :3])[None], metas)[0]  # attention applied inside
    np.testing.assert_array_equal(fused.score, alone.score)
    np.testing.assert_allclose(fused.boxes, alone.boxes, rtol=0, atol=1e-5)


def test_a_model_that_changes_detection_without_outputs_from_features_is_refused(pair):
    from stad.models.moc import MOCDetector

    class Custom(MOCDetector):
        def detect_from_features(self, features, metas=None, flip_features=None):
            return super().detect_from_features(features * 2, metas, flip_features)

    rgb, flow = pair
    custom = Custom(backbone=rgb.backbone, neck=rgb.neck, head=rgb.head, num_classes=2, K=K).eval()
    model = TwoStreamDetector(rgb=custom, flow=flow, flow_channels=6)
    with pytest.raises(StadError, match="cannot be fused"):
        model.detect_from_features(model.frame_features(_frames())[None])
