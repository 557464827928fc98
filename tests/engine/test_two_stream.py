"""Flow stream and RGB + flow fusion through the runner and the CLI, on a copy of the tiny synthetic set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from stad.cli import main
from stad.config import config_to_dict
from stad.data.datasets import normalize_clip
from stad.data.streams import StreamSpec
from stad.engine.families.common import LoadedData
from stad.engine.families.tubelet import TubeletInferenceConfig, flip_input, resolve_model_config
from stad.errors import StadError
from tests.conftest import tiny_moc_config


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_flip_input_inverts_the_flow_x_bytes_in_normalised_space():
    rng = np.random.default_rng(0)
    spec = StreamSpec("fused", flow_frames=2)
    clip = (rng.random((2, 4, 5, spec.channels)) * 255).astype(np.uint8)  # [T, H, W, 9]
    cfg = TubeletInferenceConfig(flip_invert_channels=spec.flip_invert_channels)
    mirrored = np.ascontiguousarray(clip[:, :, ::-1])
    mirrored[..., spec.flip_invert_channels] = 255 - mirrored[..., spec.flip_invert_channels]
    torch.testing.assert_close(flip_input(normalize_clip(clip), cfg), normalize_clip(mirrored), rtol=0, atol=1e-5)
    # without the channel list it is a plain mirror (RGB)
    torch.testing.assert_close(flip_input(normalize_clip(clip), TubeletInferenceConfig()), normalize_clip(clip).flip(-1))


def test_in_chans_follows_the_stream_and_a_contradiction_is_an_error(tiny_synth, tmp_path):
    from dataclasses import replace

    from stad.data.synthetic import load_annotations

    ann = LoadedData(load_annotations(tiny_synth), tiny_synth)
    cfg = tiny_moc_config(tiny_synth, tmp_path)
    flow_cfg = replace(cfg, data=replace(cfg.data, options={**cfg.data.options, "stream": "flow", "flow_frames": 3}))
    assert resolve_model_config(flow_cfg, ann).model.options["in_chans"] == 9
    assert "in_chans" not in resolve_model_config(cfg, ann).model.options
    bad = replace(flow_cfg, model=replace(flow_cfg.model, options={**flow_cfg.model.options, "in_chans": 3}))
    with pytest.raises(StadError, match="in_chans=3 but data.options.stream='flow'"):
        resolve_model_config(bad, ann)


@pytest.fixture(scope="module")
def two_runs(tiny_synth, tmp_path_factory):
    """An RGB and a flow model, one short epoch each (window_stride 6); the flow is computed on first use."""
    base = tmp_path_factory.mktemp("two_stream")
    data = base / "data"
    shutil.copytree(tiny_synth, data)
    cfg_path = base / "tiny.yaml"
    cfg_path.write_text(yaml.safe_dump(config_to_dict(tiny_moc_config(data, base / "rgb"))))
    common = ["train.epochs=1", "train.val_every=0", "data.options.window_stride=6"]
    assert main(["train", str(cfg_path), *common]) == 0
    assert not (data / "brox-images").exists()
    assert main(["train", str(cfg_path), *common, "data.options.stream=flow", f"train.output_dir={base / 'flow'}"]) == 0
    assert len(list((data / "brox-images").iterdir())) == 8  # all videos' flow computed on first use
    return cfg_path, base, data


CONTRACT = ("frame_mAP", "video_mAP@0.2", "video_mAP@0.5", "video_mAP@0.75", "video_mAP@0.5:0.95",
            "frame_mAP/vis0-0.25", "frame_mAP/vis0.25-0.75", "frame_mAP/vis0.75-1",
            "video_mAP_occluded@0.2", "video_mAP_occluded@0.5", "video_mAP_occluded@0.75", "video_mAP_occluded@0.5:0.95")


def _metrics(path):
    report = json.loads((path / "report.json").read_text())
    return report, report["metrics"]


def test_flow_checkpoint_is_15_channels_and_tests_on_its_stream(two_runs):
    from stad.engine.runner import load_detector

    cfg_path, base, _ = two_runs
    model, cfg = load_detector(base / "flow" / "last.pt")
    assert cfg.model.options["in_chans"] == 15 and cfg.data.options["stream"] == "flow"
    assert main(["test", str(cfg_path), "--checkpoint", str(base / "flow" / "last.pt"), "--out", str(base / "t_flow"), "--flip"]) == 0
    report, metrics = _metrics(base / "t_flow")
    assert report["stream"] == "flow"
    assert set(CONTRACT) <= set(metrics)
    assert all(v is None or 0.0 <= v <= 1.0 for v in metrics.values())
    assert "frame_by_visibility" in report["occlusion"]


def test_fused_test_report_and_weight_one_equals_rgb(two_runs, capsys):
    cfg_path, base, _ = two_runs
    rgb, flow = str(base / "rgb" / "last.pt"), str(base / "flow" / "last.pt")
    assert main(["test", str(cfg_path), "--checkpoint", rgb, "--flow-checkpoint", flow, "--out", str(base / "t_fused")]) == 0
    report, metrics = _metrics(base / "t_fused")
    assert report["stream"] == "fused"
    assert report["fusion_weights"] == {"heatmap": 0.5, "movement": 0.8, "wh": 0.8}
    assert set(CONTRACT) <= set(metrics)
    md = (base / "t_fused" / "report.md").read_text()
    assert "visibility band" in md and "video-mAP (occluded)" in md
    assert main(["test", str(cfg_path), "--checkpoint", rgb, "--out", str(base / "t_rgb")]) == 0
    assert main(["test", str(cfg_path), "--checkpoint", rgb, "--flow-checkpoint", flow, "--fusion-weight", "1",
                 "--out", str(base / "t_w1")]) == 0
    assert _metrics(base / "t_w1")[1] == _metrics(base / "t_rgb")[1]
    rgb_detections = (base / "t_rgb" / "detections.csv").read_text()
    assert (base / "t_w1" / "detections.csv").read_text() == rgb_detections
    capsys.readouterr()
    # streams swapped: a clear one-line error
    assert main(["test", str(cfg_path), "--checkpoint", flow, "--flow-checkpoint", rgb, "--out", str(base / "bad")]) == 2
    assert "must be an RGB model" in capsys.readouterr().err


def test_detect_computes_flow_on_the_fly(two_runs, tmp_path, capsys):
    _, base, data = two_runs
    frames = data / "rgb-images" / sorted(p.name for p in (data / "rgb-images").iterdir())[0]
    rgb, flow = str(base / "rgb" / "last.pt"), str(base / "flow" / "last.pt")
    assert main(["detect", str(frames), "--checkpoint", flow, "--out", str(tmp_path / "f"), "--device", "cpu"]) == 0
    assert main(["detect", str(frames), "--checkpoint", rgb, "--flow-checkpoint", flow, "--fusion-weight", "0.5",
                 "--flow-method", "farneback", "--out", str(tmp_path / "fused"), "--device", "cpu"]) == 0
    assert (tmp_path / "fused" / f"{frames.name}_tubes.json").is_file()
    # flow on the fly gives the detections of the stored flow (same bytes): compare with stad test's tubelets
    from stad.data.streams import combine_streams, flow_images_from_frames, read_stream_frames
    from stad.engine.families.tubelet import detect_video_tubelets
    from stad.engine.infer import read_source
    from stad.engine.runner import load_detector

    model, _ = load_detector(flow)
    cfg = TubeletInferenceConfig(input_size=(96, 128))
    video, T = frames.name, len(list(frames.iterdir()))
    rgb_frames, _ = read_source(frames)
    spec = StreamSpec("flow", 5)
    live = detect_video_tubelets(model, combine_streams(spec, None, flow_images_from_frames(iter(rgb_frames))),
                                 orig_size=rgb_frames.shape[1:3], device="cpu", cfg=cfg)
    stored = detect_video_tubelets(model, read_stream_frames(data, video, T, spec), orig_size=rgb_frames.shape[1:3], device="cpu", cfg=cfg)
    np.testing.assert_array_equal(live.score, stored.score)
    np.testing.assert_array_equal(live.boxes, stored.boxes)


def test_flow_augmentation_options():
    from stad.engine.families.tubelet import flow_augment_options

    assert flow_augment_options(StreamSpec("rgb"), {}) == {}
    opts = flow_augment_options(StreamSpec("flow", 2), {"expand": False})
    assert opts == {"photometric": False, "fill": 128.0, "flip_invert_channels": [0, 3]}
    with pytest.raises(StadError, match="photometric=true is not possible for the flow stream"):
        flow_augment_options(StreamSpec("flow", 2), {"photometric": True})


def test_eval_commands_reproduce_the_occlusion_metrics_of_the_report(two_runs, capsys):
    cfg_path, base, data = two_runs
    test_dir = base / "t_eval"
    assert main(["test", str(cfg_path), "--checkpoint", str(base / "rgb" / "last.pt"), "--out", str(test_dir)]) == 0
    _, metrics = _metrics(test_dir)
    gt = str(data / "Synth-GT.pkl")
    assert main(["eval", "video-map", "--gt", gt, "--tubes", str(test_dir / "tubes.json"), "--occluded-below", "0.5",
                 "--json", str(test_dir / "vm.json")]) == 0
    occluded = json.loads((test_dir / "vm.json").read_text())["occluded"]["mAP"]
    for thr in ("0.2", "0.5", "0.75", "0.5:0.95"):
        assert occluded[thr] == pytest.approx(metrics[f"video_mAP_occluded@{thr}"], nan_ok=True)
    assert main(["eval", "frame-map", "--gt", gt, "--detections", str(test_dir / "detections.csv"), "--by-visibility",
                 "--json", str(test_dir / "fm.json")]) == 0
    bands = json.loads((test_dir / "fm.json").read_text())["by_visibility"]
    assert {f"frame_mAP/vis{b}" for b in bands} == {k for k in metrics if k.startswith("frame_mAP/vis")}
    for band, value in bands.items():
        assert value["mAP"] == pytest.approx(metrics[f"frame_mAP/vis{band}"], nan_ok=True)
    assert "visibility band" in capsys.readouterr().out
