"""SlowFast backbone (FBIL / ACAR-Net): frame sampling, shapes, counts, frozen BN, ACAR and PySlowFast key maps.

The numbers are the facts of ``shared/methods/FBIL.md`` §3 and §7 (3, 5, 6, 7, 8), measured on the public code.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from stad.errors import StadError
from stad.models.backbones.slowfast import (
    SlowFast,
    acar_to_pytorchvideo_key,
    build_slowfast,
    load_acar_state_dict,
    load_pyslowfast_state_dict,
    pyslowfast_to_pytorchvideo_key,
    pytorchvideo_to_acar_key,
    pytorchvideo_to_pyslowfast_key,
    save_acar_state_dict,
    slow_frame_indices,
    slowfast_r50_acar,
    slowfast_r101_acar,
    slowfast_tiny,
    to_acar_state_dict,
    to_pyslowfast_state_dict,
)


def _randomize(model: nn.Module, seed: int) -> nn.Module:
    """Random weights and BatchNorm statistics from ``seed`` (so that a wrong key mapping changes the outputs)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith(("running_var", "weight")) and tensor.dim() == 1:
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=gen))
            elif tensor.dim() == 1:  # bias, running_mean
                tensor.copy_(0.1 * torch.randn(tensor.shape, generator=gen))
            else:  # conv kernels: variance-preserving scale
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
    return model.eval()


def _clip(seed: int = 0, shape: tuple[int, ...] = (1, 3, 8, 32, 48)) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def _run(model: nn.Module, clip: torch.Tensor) -> list[torch.Tensor]:
    with torch.no_grad():
        return model(clip)


@pytest.fixture(scope="module")
def r101() -> SlowFast:
    return slowfast_r101_acar()


@pytest.fixture(scope="module")
def r50() -> SlowFast:
    return slowfast_r50_acar()


# ----------------------------------------------------------------------------------------------------------------
# Frame sampling and shapes


def test_slow_frame_indices() -> None:
    assert slow_frame_indices(32, 4, full_span=True).tolist() == [0, 4, 8, 13, 17, 22, 26, 31]  # FBIL.md §7 fact 3
    assert slow_frame_indices(32, 4).tolist() == [0, 4, 8, 12, 16, 20, 24, 28]
    assert slow_frame_indices(16, 4, full_span=True).tolist() == [0, 5, 10, 15]
    assert slow_frame_indices(32, 4).dtype == torch.int64
    with pytest.raises(ValueError, match="30 frames"):
        slow_frame_indices(30, 4)


@pytest.mark.parametrize("full_span", [False, True])
def test_forward_samples_the_slow_pathway(full_span: bool) -> None:
    model = _randomize(slowfast_tiny(slow_full_span=full_span), seed=1)
    clip = _clip(shape=(1, 3, 16, 32, 48))
    index = torch.tensor([0, 5, 10, 15] if full_span else [0, 4, 8, 12])
    pathways = [clip[:, :, index], clip]
    with torch.no_grad():
        expected = model.forward_pathways(pathways)
    assert pathways[0].shape == (1, 3, 4, 32, 48) and pathways[1] is clip  # the caller's list is left alone
    slow, fast = _run(model, clip)
    assert torch.equal(slow, expected[0]) and torch.equal(fast, expected[1])
    other = _run(_randomize(slowfast_tiny(slow_full_span=not full_span), seed=1), clip)
    assert not torch.allclose(other[0], slow)  # the rule matters
    with pytest.raises(ValueError, match="multiple of alpha=4"):
        model(_clip(shape=(1, 3, 10, 32, 48)))


def test_tiny_shapes_at_the_ava_size() -> None:
    """FBIL.md §7 fact 5's spatial rule (256x455 -> 16x29, output stride 16) and §8's tiny widths."""
    model = slowfast_tiny()
    assert model.out_channels == (256, 64) and model.output_stride == 16
    slow, fast = _run(model, _clip(shape=(1, 3, 32, 256, 455)))
    assert slow.shape == (1, 256, 8, 16, 29)
    assert fast.shape == (1, 64, 32, 16, 29)
    assert torch.isfinite(slow).all() and torch.isfinite(fast).all()
    slow, fast = _run(model, _clip(shape=(2, 3, 16, 128, 224)))  # the §8 training clip
    assert slow.shape == (2, 256, 4, 8, 14) and fast.shape == (2, 64, 16, 8, 14)


def test_r101_shapes(r101: SlowFast) -> None:
    """FBIL.md §7 fact 5's rules at a reduced input (0.3 s): channels, slow = T/4 frames, ceil(H/16) x ceil(W/16).

    The full (1, 3, 32, 256, 455) clip takes 18-26 s on one shared CPU thread, too long for the suite; run once by
    hand it gave slow (1, 2048, 8, 16, 29) and fast (1, 256, 32, 16, 29) as fact 5 says.
    """
    assert r101.out_channels == (2048, 256)
    slow, fast = _run(r101.eval(), _clip(shape=(1, 3, 8, 48, 65)))
    assert slow.shape == (1, 2048, 2, 3, 5)
    assert fast.shape == (1, 256, 8, 3, 5)
    assert torch.isfinite(slow).all() and torch.isfinite(fast).all()


def test_r101_layout(r101: SlowFast) -> None:
    acar = {key: tuple(value.shape) for key, value in to_acar_state_dict(r101.state_dict()).items()}
    # FBIL.md §7 fact 6: conv-only k5 laterals.
    assert acar["Tconv1.weight"] == (16, 8, 5, 1, 1)
    assert acar["Tconv2.weight"] == (64, 32, 5, 1, 1)
    assert acar["Tconv3.weight"] == (128, 64, 5, 1, 1)
    assert acar["Tconv4.weight"] == (256, 128, 5, 1, 1)
    assert not any(key.startswith("Tconv5") or key.startswith("Tconv1.1") for key in acar)
    # §3 table: stems, slow input channels after the lateral concat, temporal kernels of conv_a, 23 res4 blocks.
    assert acar["slow_conv1.weight"] == (64, 3, 1, 7, 7) and acar["fast_conv1.weight"] == (8, 3, 5, 7, 7)
    for stage, (channels_in, kt) in enumerate([(80, 1), (320, 1), (640, 3), (1280, 3)], start=1):
        assert acar[f"slow_res{stage}.0.conv1.weight"][1:3] == (channels_in, kt)
        assert acar[f"slow_res{stage}.0.downsample.0.weight"][1] == channels_in
        assert acar[f"fast_res{stage}.0.conv1.weight"][2] == 3
    assert "slow_res3.22.bn3.running_var" in acar and "slow_res3.23.conv1.weight" not in acar
    assert "fast_res4.0.downsample_bn.num_batches_tracked" in acar and "fast_res4.1.downsample.0.weight" not in acar
    # res5: spatial stride 1, dilation 2; res4 (ACAR slow_res3): stride 2.
    res5 = r101.blocks[4].multipathway_blocks[0].res_blocks[0]
    assert res5.branch2.conv_b.stride == (1, 1, 1) and res5.branch2.conv_b.dilation == (1, 2, 2)
    assert r101.blocks[3].multipathway_blocks[1].res_blocks[0].branch2.conv_b.stride == (1, 2, 2)


def test_counts(r101: SlowFast, r50: SlowFast) -> None:
    """FBIL.md §7 fact 7 (counted on built models, no forward) and §8's tiny backbone."""
    state = r101.state_dict()
    assert len(state) == 1252 and sum(key.endswith("num_batches_tracked") for key in state) == 208
    assert sum(p.numel() for p in r101.parameters()) == 61_904_040
    assert len(r50.state_dict()) == 660
    assert sum(p.numel() for p in r50.parameters()) == 33_644_488
    assert sum(p.numel() for p in slowfast_tiny().parameters()) == 210_858


def test_r50_layout(r50: SlowFast, r101: SlowFast) -> None:
    acar = {key: tuple(value.shape) for key, value in to_acar_state_dict(r50.state_dict()).items()}
    assert acar["Tconv1.0.weight"] == (16, 8, 7, 1, 1) and acar["Tconv4.0.weight"] == (256, 128, 7, 1, 1)
    assert acar["Tconv1.1.running_mean"] == (16,) and "Tconv1.weight" not in acar
    assert "slow_res3.5.conv3.weight" in acar and "slow_res3.6.conv3.weight" not in acar
    assert r50.slow_full_span and not r101.slow_full_span


def test_build_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="depth must be one of"):
        build_slowfast(34)
    with pytest.raises(ValueError, match="'bn'"):
        build_slowfast(18, lateral="bn")
    with pytest.raises(ValueError, match="odd"):
        build_slowfast(18, lateral_kernel=4)
    with pytest.raises(ValueError, match="width=10, beta_inv=4"):
        build_slowfast(18, width=10, beta_inv=4)


# ----------------------------------------------------------------------------------------------------------------
# Frozen batch norm


def _batch_norms(model: nn.Module) -> list[nn.BatchNorm3d]:
    return [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]


def test_frozen_batch_norm_stays_in_eval_and_trains_its_affine_parameters() -> None:
    model = _randomize(slowfast_tiny(), seed=2)
    clip = _clip()
    reference = _run(model, clip)
    stats = [bn.running_mean.clone() for bn in _batch_norms(model)]
    model.train()
    assert model.training and len(_batch_norms(model)) == 34
    assert not any(bn.training for bn in _batch_norms(model))
    slow, fast = model(clip)
    assert torch.allclose(slow, reference[0], atol=1e-6) and torch.allclose(fast, reference[1], atol=1e-6)
    (slow.square().mean() + fast.square().mean()).backward()
    assert all(torch.equal(bn.running_mean, before) for bn, before in zip(_batch_norms(model), stats))
    for bn in _batch_norms(model):
        assert bn.weight.requires_grad and bn.weight.grad is not None and bn.weight.grad.abs().sum() > 0
        assert bn.bias.grad is not None and bn.bias.grad.abs().sum() > 0


def test_unfrozen_batch_norm_trains() -> None:
    model = slowfast_tiny(freeze_bn=False).train()
    assert all(bn.training for bn in _batch_norms(model))
    before = _batch_norms(model)[0].running_mean.clone()
    model(_clip())
    assert not torch.equal(_batch_norms(model)[0].running_mean, before)


# ----------------------------------------------------------------------------------------------------------------
# Key maps


# Pairs written from FBIL.md §3, independently of the module's tables.
ACAR_PAIRS = [
    ("slow_conv1.weight", "blocks.0.multipathway_blocks.0.conv.weight"),
    ("fast_bn1.running_var", "blocks.0.multipathway_blocks.1.norm.running_var"),
    ("Tconv1.weight", "blocks.0.multipathway_fusion.conv_fast_to_slow.weight"),
    ("Tconv4.weight", "blocks.3.multipathway_fusion.conv_fast_to_slow.weight"),
    ("slow_res1.0.conv1.weight", "blocks.1.multipathway_blocks.0.res_blocks.0.branch2.conv_a.weight"),
    ("fast_res3.22.bn3.bias", "blocks.3.multipathway_blocks.1.res_blocks.22.branch2.norm_c.bias"),
    ("slow_res4.1.conv2.weight", "blocks.4.multipathway_blocks.0.res_blocks.1.branch2.conv_b.weight"),
    ("slow_res2.0.downsample.0.weight", "blocks.2.multipathway_blocks.0.res_blocks.0.branch1_conv.weight"),
    ("fast_res2.0.downsample_bn.num_batches_tracked",
     "blocks.2.multipathway_blocks.1.res_blocks.0.branch1_norm.num_batches_tracked"),
]
ACAR_NORM_PAIRS = [
    ("Tconv2.0.weight", "blocks.1.multipathway_fusion.conv_fast_to_slow.weight"),
    ("Tconv2.1.running_mean", "blocks.1.multipathway_fusion.norm.running_mean"),
]
PYSLOWFAST_PAIRS = [
    ("s1.pathway0_stem.conv.weight", "blocks.0.multipathway_blocks.0.conv.weight"),
    ("s1.pathway1_stem.bn.weight", "blocks.0.multipathway_blocks.1.norm.weight"),
    ("s1_fuse.conv_f2s.weight", "blocks.0.multipathway_fusion.conv_fast_to_slow.weight"),
    ("s4_fuse.bn.running_mean", "blocks.3.multipathway_fusion.norm.running_mean"),
    ("s2.pathway0_res0.branch1.weight", "blocks.1.multipathway_blocks.0.res_blocks.0.branch1_conv.weight"),
    ("s2.pathway1_res0.branch1_bn.bias", "blocks.1.multipathway_blocks.1.res_blocks.0.branch1_norm.bias"),
    ("s4.pathway1_res5.branch2.b_bn.weight", "blocks.3.multipathway_blocks.1.res_blocks.5.branch2.norm_b.weight"),
    ("s5.pathway0_res2.branch2.c.weight", "blocks.4.multipathway_blocks.0.res_blocks.2.branch2.conv_c.weight"),
    ("s3.pathway0_res1.branch2.a.weight", "blocks.2.multipathway_blocks.0.res_blocks.1.branch2.conv_a.weight"),
]


@pytest.mark.parametrize(("theirs", "ours"), ACAR_PAIRS)
def test_acar_key_map(theirs: str, ours: str) -> None:
    assert acar_to_pytorchvideo_key(theirs) == ours
    assert pytorchvideo_to_acar_key(ours) == theirs


@pytest.mark.parametrize(("theirs", "ours"), ACAR_NORM_PAIRS)
def test_acar_key_map_of_bn_laterals(theirs: str, ours: str) -> None:
    assert acar_to_pytorchvideo_key(theirs) == ours
    assert pytorchvideo_to_acar_key(ours, lateral_norm=True) == theirs


@pytest.mark.parametrize(("theirs", "ours"), PYSLOWFAST_PAIRS)
def test_pyslowfast_key_map(theirs: str, ours: str) -> None:
    assert pyslowfast_to_pytorchvideo_key(theirs) == ours
    assert pytorchvideo_to_pyslowfast_key(ours) == theirs


@pytest.mark.parametrize("key", ["slow_res1.0.conv4.weight", "head.fc.weight", "Tconv1.2.weight", "slow_conv2.weight"])
def test_unknown_acar_key_is_named(key: str) -> None:
    with pytest.raises(StadError, match=key.replace(".", r"\.")):
        acar_to_pytorchvideo_key(key)


def test_key_maps_are_bijective_on_r101(r101: SlowFast) -> None:
    state = r101.state_dict()
    acar = to_acar_state_dict(state)
    pysf = to_pyslowfast_state_dict(state)
    assert len(acar) == len(pysf) == len(state) == 1252
    assert [acar_to_pytorchvideo_key(key) for key in acar] == list(state)
    assert [pyslowfast_to_pytorchvideo_key(key) for key in pysf] == list(state)


# ----------------------------------------------------------------------------------------------------------------
# Loading (FBIL.md §7 fact 8): export model A in a foreign layout, load it into model B, same outputs.

TINY_VARIANTS = {
    "r101_style": {},
    "r50_style": {"lateral": "conv_bn_relu", "lateral_kernel": 7, "slow_full_span": True},
}


@pytest.mark.parametrize("variant", sorted(TINY_VARIANTS))
@pytest.mark.parametrize("layout", ["acar", "pyslowfast"])
def test_round_trip_gives_identical_outputs(variant: str, layout: str) -> None:
    kwargs = TINY_VARIANTS[variant]
    model_a = _randomize(slowfast_tiny(**kwargs), seed=3)
    model_b = _randomize(slowfast_tiny(**kwargs), seed=4)
    clip = _clip(seed=5)
    expected = _run(model_a, clip)
    assert not torch.allclose(_run(model_b, clip)[0], expected[0])
    if layout == "acar":
        state = to_acar_state_dict(model_a.state_dict())
        assert ("Tconv1.1.weight" in state) == (variant == "r50_style")
        load_acar_state_dict(model_b, state)
    else:
        state = to_pyslowfast_state_dict(model_a.state_dict())
        assert "s1.pathway0_stem.conv.weight" in state
        load_pyslowfast_state_dict(model_b, state)
    got = _run(model_b.eval(), clip)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_wrapped_checkpoints_load() -> None:
    model_a = _randomize(slowfast_tiny(), seed=6)
    acar = to_acar_state_dict(model_a.state_dict())
    training_checkpoint = {
        "epoch": 3,
        "state_dict": {
            **{f"module.backbone.module.{key}": value for key, value in acar.items()},
            "module.head.module.fc.weight": torch.zeros(60, 2048),
        },
    }
    model_b = _randomize(slowfast_tiny(), seed=7)
    load_acar_state_dict(model_b, training_checkpoint)
    assert torch.equal(_run(model_b, _clip())[0], _run(model_a, _clip())[0])

    pysf = to_pyslowfast_state_dict(model_a.state_dict())
    converted = {key: value for key, value in pysf.items() if not key.endswith("num_batches_tracked")}  # Caffe2-style
    pyslowfast_checkpoint = {
        "model_state": {**{f"module.{key}": value for key, value in converted.items()},
                        "module.head.projection.weight": torch.zeros(400, 320)},
    }
    model_c = _randomize(slowfast_tiny(), seed=8)
    load_pyslowfast_state_dict(model_c, pyslowfast_checkpoint)
    assert torch.equal(_run(model_c, _clip())[1], _run(model_a, _clip())[1])


def test_file_round_trip(tmp_path: Path) -> None:
    model_a = _randomize(slowfast_tiny(), seed=9)
    path = tmp_path / "SLOWFAST_TINY.pth.tar"
    save_acar_state_dict(model_a, path)
    assert "Tconv1.weight" in torch.load(path, map_location="cpu", weights_only=True)
    model_b = _randomize(slowfast_tiny(), seed=10)
    load_acar_state_dict(model_b, path)
    assert torch.equal(_run(model_b, _clip())[0], _run(model_a, _clip())[0])
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_acar_state_dict(model_b, tmp_path / "missing.pth")


def test_missing_unexpected_and_mismatched_keys_are_named(tmp_path: Path) -> None:
    model = slowfast_tiny()
    acar = to_acar_state_dict(model.state_dict())
    missing = {key: value for key, value in acar.items() if key != "slow_res2.0.conv1.weight"}
    with pytest.raises(StadError, match=r"missing keys \['slow_res2\.0\.conv1\.weight'\]"):
        load_acar_state_dict(model, missing)
    extra = {**acar, "slow_res5.0.conv1.weight": torch.zeros(1)}
    with pytest.raises(StadError, match=r"unexpected keys \['slow_res5\.0\.conv1\.weight'\]"):
        load_acar_state_dict(model, extra)
    wrong = {**acar, "Tconv2.weight": torch.zeros(16, 8, 7, 1, 1)}
    with pytest.raises(StadError, match=r"Tconv2\.weight: file \(16, 8, 7, 1, 1\) vs model \(16, 8, 5, 1, 1\)"):
        load_acar_state_dict(model, wrong)
    path = tmp_path / "bad.pth"
    torch.save(missing, path)
    with pytest.raises(StadError, match=rf"{path}.*slow_res2\.0\.conv1\.weight"):
        load_acar_state_dict(model, path)
    with pytest.raises(StadError, match="PySlowFast layout.*unexpected keys"):
        load_pyslowfast_state_dict(model, acar)  # the wrong layout
    with pytest.raises(StadError, match=r"\['fast_res1\.0\.bn1\.weight'\] are not tensors"):
        load_acar_state_dict(model, {**acar, "fast_res1.0.bn1.weight": "not a tensor"})


class _Payload:
    """Unpickling this object would create the file ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (open, (str(self.marker), "w"))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_a_pickle_that_runs_code_is_refused(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "code_ran"
    path = tmp_path / "evil.pth"
    payload = {"slow_conv1.weight": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with path.open("wb") as handle:
            pickle.dump(payload, handle)
    with pytest.raises(StadError, match="evil.pth: cannot be read as SlowFast weights"):
        load_acar_state_dict(slowfast_tiny(), path)
    assert not marker.exists()
    with pytest.raises(StadError, match="evil.pth: cannot be read as SlowFast weights"):
        load_pyslowfast_state_dict(slowfast_tiny(), path)
    assert not marker.exists()
    if writer == "torch.save":  # the payload is live: an unrestricted load runs it
        torch.load(path, map_location="cpu", weights_only=False)
        assert marker.exists()
