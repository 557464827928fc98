"""Inception-I3D (STEP's backbone): channel counts, TF-SAME padding, shapes, frozen BN, weight-file key mapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stad.errors import StadError
from stad.models.backbones.i3d import (
    FrozenBatchNorm3d,
    InceptionI3D,
    MaxPool3dSame,
    Unit3D,
    freeze_batchnorm,
    map_i3d_kinetics_state_dict,
    map_step_base_net_state_dict,
    map_step_mixed5_state_dict,
    mixed5,
    pool_padding,
    tf_same_padding,
)

# STEP's base_net Sequential positions, written from STEP.md §9 independently of the module's table.
STEP_POSITIONS = {
    "conv3d_1a_7x7": 0, "conv3d_2b_1x1": 2, "conv3d_2c_3x3": 3, "mixed_3b": 5, "mixed_3c": 6,
    "mixed_4b": 8, "mixed_4c": 9, "mixed_4d": 10, "mixed_4e": 11, "mixed_4f": 12,
}


def _randomize_bn(module: nn.Module, seed: int) -> nn.Module:
    """Give every batch norm non-trivial affine values and statistics (so a wrong mapping changes outputs)."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, (FrozenBatchNorm3d, nn.BatchNorm3d)):
            c = m.running_mean.numel()
            with torch.no_grad():
                m.weight.copy_(0.5 + torch.rand(c, generator=gen))
                m.bias.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_mean.copy_(0.1 * torch.randn(c, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(c, generator=gen))
    return module


def _with_counters(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the ``num_batches_tracked`` counters a real BatchNorm3d file holds."""
    out = dict(state_dict)
    for key in state_dict:
        if key.endswith(".batch3d.running_var"):
            out[key.replace("running_var", "num_batches_tracked")] = torch.tensor(7)
    return out


def test_channel_counts_divisor_8_and_1() -> None:
    net = InceptionI3D(channel_divisor=8)
    widths = {name: child.out_channels for name, child in net.named_children() if hasattr(child, "out_channels")}
    assert widths == {
        "conv3d_1a_7x7": 8, "conv3d_2b_1x1": 8, "conv3d_2c_3x3": 24, "mixed_3b": 32, "mixed_3c": 60,
        "mixed_4b": 64, "mixed_4c": 64, "mixed_4d": 64, "mixed_4e": 66, "mixed_4f": 104,
    }
    b = net.mixed_3b
    assert [b.branch_0.out_channels, b.branch_1[0].out_channels, b.branch_1[1].out_channels,
            b.branch_2[0].out_channels, b.branch_2[1].out_channels, b.branch_3[1].out_channels] == [8, 12, 16, 2, 4, 4]
    assert net.out_channels == 104 and net.stride == 16
    head = mixed5(net.out_channels, channel_divisor=8)
    assert head.mixed_5b.out_channels == 104 and head.mixed_5c.out_channels == 128 == head.out_channels

    full = InceptionI3D()
    assert full.out_channels == 832 and mixed5(full.out_channels).out_channels == 1024
    assert full.conv3d_1a_7x7.conv3d.weight.shape == (64, 3, 7, 7, 7)
    assert full.mixed_4f.branch_1[1].conv3d.weight.shape == (320, 160, 3, 3, 3)
    with torch.no_grad():
        out = full(torch.randn(1, 3, 4, 16, 16))
    assert out.shape == (1, 832, 1, 1, 1)


@pytest.mark.parametrize("divisor", [0, 3, 16, 64])
def test_bad_channel_divisor(divisor: int) -> None:
    with pytest.raises(ValueError, match=f"channel_divisor.*{divisor}"):
        InceptionI3D(channel_divisor=divisor)
    with pytest.raises(ValueError, match="channel_divisor"):
        mixed5(104, channel_divisor=divisor)


def test_tf_same_and_pool_padding_numbers() -> None:
    assert tf_same_padding(36, 7, 2) == (2, 3)  # out 18: 17*2 + 7 - 36 = 5
    assert tf_same_padding(37, 7, 2) == (3, 3)  # out 19: 18*2 + 7 - 37 = 6
    assert tf_same_padding(4, 3, 2) == (0, 1)
    assert tf_same_padding(5, 3, 1) == (1, 1)
    assert tf_same_padding(5, 1, 1) == (0, 0)
    assert tf_same_padding(1, 7, 2) == (3, 3)
    assert pool_padding(3, 2) == (0, 1)
    assert pool_padding(3, 1) == (1, 1)
    assert pool_padding(1, 1) == (0, 0)


def test_unit3d_pads_asymmetrically_like_tensorflow() -> None:
    # W = 4, kernel 3, stride 2: TF "SAME" pads 0 before, 1 after -> windows [1,2,3] and [3,4,0].
    unit = Unit3D(1, 1, (1, 1, 3), (1, 1, 2)).eval()
    with torch.no_grad():
        unit.conv3d.weight.fill_(1.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    bn_scale = (1 + 1e-5) ** -0.5  # identity batch norm with eps 1e-5
    assert torch.allclose(unit(x).flatten(), torch.tensor([6.0, 7.0]) * bn_scale)
    # W = 5, kernel 3, stride 2: 1 before, 1 after -> [0,1,2] [2,3,4] [4,5,0].
    x = torch.arange(1.0, 6.0).view(1, 1, 1, 1, 5)
    assert torch.allclose(unit(x).flatten(), torch.tensor([3.0, 9.0, 9.0]) * bn_scale)


def test_maxpool_pads_zeros_and_uses_ceil_mode() -> None:
    # W = 5, kernel 3, stride 2: pad (0, 1) zeros, ceil mode -> windows [0:3], [2:5], [4:6] (partial, with the zero).
    pool = MaxPool3dSame((1, 1, 3), (1, 1, 2))
    x = torch.tensor([-5.0, -1.0, -2.0, -9.0, -3.0]).view(1, 1, 1, 1, 5)
    assert pool(x).flatten().tolist() == [-1.0, -2.0, 0.0]
    # kernel 3, stride 1 (the Mixed branch_3 pool): pad (1, 1) zeros, size kept.
    pool = MaxPool3dSame((1, 1, 3), 1)
    x = torch.tensor([-1.0, -2.0, -3.0]).view(1, 1, 1, 1, 3)
    assert pool(x).flatten().tolist() == [0.0, -1.0, 0.0]
    assert MaxPool3dSame(3, 1)(torch.randn(1, 2, 3, 5, 7)).shape == (1, 2, 3, 5, 7)
    # pool4a (3x3x3 / 2) halves every dimension with ceil
    assert MaxPool3dSame(3, 2)(torch.randn(1, 2, 7, 25, 50)).shape == (1, 2, 4, 13, 25)


def test_shapes_step_clip_and_no_nan() -> None:
    torch.manual_seed(0)
    net = InceptionI3D(channel_divisor=8)
    with torch.no_grad():
        feat = net.forward_features(torch.randn(1, 3, 36, 128, 128))
        assert feat.shape == (1, 104, 9, 8, 8)  # STEP.md §8 fact 8 at /8 width
        ctx = mixed5(net.out_channels, channel_divisor=8)(feat)
    assert ctx.shape == (1, 128, 9, 8, 8)
    assert torch.isfinite(feat).all() and torch.isfinite(ctx).all()


@pytest.mark.parametrize(("size", "expected"), [((13, 37, 37), (4, 3, 3)), ((5, 33, 17), (2, 3, 2)), ((1, 16, 16), (1, 1, 1))])
def test_odd_sizes_follow_ceil_rules(size: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    net = InceptionI3D(channel_divisor=8, in_chans=2)
    with torch.no_grad():
        out = net(torch.randn(1, 2, *size))
    assert out.shape == (1, 104, *expected)
    assert torch.isfinite(out).all()


def test_batched_equals_per_sample() -> None:
    torch.manual_seed(0)
    net = _randomize_bn(InceptionI3D(channel_divisor=8), seed=1)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        batched = net(x)
        single = torch.cat([net(x[i : i + 1]) for i in range(2)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_forward_rejects_non_clip_input() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, T, H, W\].*\(1, 3, 32, 32\)"):
        InceptionI3D(channel_divisor=8)(torch.randn(1, 3, 32, 32))


def test_frozen_bn_train_equals_eval_and_gradients() -> None:
    torch.manual_seed(0)
    net = _randomize_bn(InceptionI3D(channel_divisor=8), seed=2)
    x = torch.randn(2, 3, 8, 32, 32)
    net.train()
    out_train = net(x)
    with torch.no_grad():
        out_eval = net.eval()(x)
    assert torch.equal(out_train, out_eval)
    assert not any("batch3d" in name for name, _ in net.named_parameters())
    assert all(not b.requires_grad for b in net.buffers())
    assert sum(isinstance(m, FrozenBatchNorm3d) for m in net.modules()) == 3 + 7 * 6
    out_train.square().mean().backward()
    assert net.conv3d_1a_7x7.conv3d.weight.grad is not None and net.conv3d_1a_7x7.conv3d.weight.grad.abs().sum() > 0
    assert net.mixed_4f.branch_3[1].conv3d.weight.grad.abs().sum() > 0


def test_trainable_bn_and_freeze_batchnorm() -> None:
    torch.manual_seed(0)
    net = _randomize_bn(InceptionI3D(channel_divisor=8, frozen_bn=False), seed=3)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm3d)]
    assert len(bns) == 45 and all(m.eps == 1e-5 and m.weight.requires_grad for m in bns)
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        reference = net.eval()(x)
        assert not torch.allclose(net.train()(x), reference)  # plain BN uses batch statistics in train mode
    # train() above updated the running statistics: restore them, then freeze.
    _randomize_bn(net, seed=3)
    assert freeze_batchnorm(net) is net
    assert not any(isinstance(m, nn.BatchNorm3d) for m in net.modules())
    net.train()
    with torch.no_grad():
        assert torch.equal(net(x), reference)
    assert not any("batch3d" in name for name, _ in net.named_parameters())
    bn = nn.BatchNorm3d(4)
    assert isinstance(freeze_batchnorm(bn), FrozenBatchNorm3d)


def test_frozen_bn_loads_a_plain_batchnorm_state_dict() -> None:
    plain = _randomize_bn(mixed5(16, channel_divisor=8, frozen_bn=False), seed=4)
    frozen = mixed5(16, channel_divisor=8)
    frozen.load_state_dict(plain.state_dict(), strict=True)  # num_batches_tracked is ignored
    x = torch.randn(1, 16, 3, 5, 5)
    with torch.no_grad():
        assert torch.allclose(frozen(x), plain.eval()(x), atol=1e-6)


def _step_base_net(net: InceptionI3D) -> dict[str, torch.Tensor]:
    """STEP's released ``base_net`` layout built from ``net`` (inverse of the mapping, written from STEP.md)."""
    out = {}
    for key, value in net.state_dict().items():
        layer, rest = key.split(".", 1)
        out[f"module.base_model.{STEP_POSITIONS[layer]}.{rest}"] = value
    return _with_counters(out)


def test_step_base_net_round_trip() -> None:
    torch.manual_seed(0)
    source = _randomize_bn(InceptionI3D(channel_divisor=8), seed=5)
    step_sd = _step_base_net(source)
    assert step_sd["module.base_model.12.branch_1.1.conv3d.weight"].shape == (40, 20, 3, 3, 3)  # [320,160,3,3,3] / 8
    assert "module.base_model.0.batch3d.num_batches_tracked" in step_sd
    target = InceptionI3D(channel_divisor=8)
    target.load_state_dict(map_step_base_net_state_dict(step_sd), strict=True)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))
    # without the DataParallel prefix as well
    bare = {k[len("module."):]: v for k, v in step_sd.items()}
    assert map_step_base_net_state_dict(bare).keys() == map_step_base_net_state_dict(step_sd).keys()


def test_step_base_net_full_width_shapes() -> None:
    mapped = map_step_base_net_state_dict(_step_base_net(InceptionI3D()))
    assert mapped["conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert mapped["mixed_4f.branch_1.1.conv3d.weight"].shape == (320, 160, 3, 3, 3)


def test_step_base_net_bad_keys() -> None:
    step_sd = _step_base_net(InceptionI3D(channel_divisor=8))
    missing = dict(step_sd)
    del missing["module.base_model.6.branch_2.1.batch3d.running_var"]
    with pytest.raises(StadError, match=r"missing key 'base_model\.6\.branch_2\.1\.batch3d\.running_var'"):
        map_step_base_net_state_dict(missing)
    for extra in ("module.base_model.1.weight", "module.base_model.5.branch_4.conv3d.weight", "module.fc.weight"):
        with pytest.raises(StadError, match=f"unexpected key '{extra}'"):
            map_step_base_net_state_dict({**step_sd, extra: torch.zeros(1)})


def _step_mixed5(head: nn.Module, prefix: str, first: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in head.state_dict().items():
        layer, rest = key.split(".", 1)
        out[f"{prefix}.{first + (layer == 'mixed_5c')}.{rest}"] = value
    return _with_counters(out)


@pytest.mark.parametrize(("prefix", "first"), [("module.i3d_conv_context", 1), ("i3d_conv", 0)])
def test_step_mixed5_round_trip(prefix: str, first: int) -> None:
    torch.manual_seed(0)
    source = _randomize_bn(mixed5(104, channel_divisor=8), seed=6)
    step_sd = _step_mixed5(source, prefix, first)
    step_sd["downsample.weight"] = torch.zeros(16, 128, 1, 1, 1)  # a head's other layers are ignored
    target = mixed5(104, channel_divisor=8)
    target.load_state_dict(map_step_mixed5_state_dict(step_sd, prefix + "."), strict=True)
    x = torch.randn(1, 104, 3, 4, 4)
    with torch.no_grad():
        assert torch.equal(target(x), source(x))

    missing = dict(step_sd)
    del missing[f"{prefix}.{first + 1}.branch_0.conv3d.weight"]
    name = prefix.removeprefix("module.")
    with pytest.raises(StadError, match=rf"missing key '{name}\.{first + 1}\.branch_0\.conv3d\.weight'"):
        map_step_mixed5_state_dict(missing, prefix)
    extra = f"{prefix}.{first + 2}.branch_0.conv3d.weight"
    with pytest.raises(StadError, match=f"unexpected key '{extra}'"):
        map_step_mixed5_state_dict({**step_sd, extra: torch.zeros(1)}, prefix)


def test_step_mixed5_unknown_prefix() -> None:
    with pytest.raises(StadError, match="unknown STEP Mixed_5 prefix 'i3d_conv_ctx'"):
        map_step_mixed5_state_dict({}, "i3d_conv_ctx")


def test_kinetics_round_trip_and_bad_keys() -> None:
    torch.manual_seed(0)
    backbone = _randomize_bn(InceptionI3D(channel_divisor=8), seed=7)
    head = _randomize_bn(mixed5(backbone.out_channels, channel_divisor=8), seed=8)
    kinetics = _with_counters({**backbone.state_dict(), **head.state_dict()})
    kinetics["conv3d_0c_1x1.conv3d.weight"] = torch.zeros(400, 128, 1, 1, 1)
    kinetics["conv3d_0c_1x1.conv3d.bias"] = torch.zeros(400)
    mapped_backbone, mapped_head = map_i3d_kinetics_state_dict(kinetics)
    backbone2, head2 = InceptionI3D(channel_divisor=8), mixed5(104, channel_divisor=8)
    backbone2.load_state_dict(mapped_backbone, strict=True)
    head2.load_state_dict(mapped_head, strict=True)
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.no_grad():
        assert torch.equal(head2(backbone2(x)), head(backbone(x)))

    missing = dict(kinetics)
    del missing["mixed_5c.branch_3.1.conv3d.weight"]
    with pytest.raises(StadError, match=r"missing key 'mixed_5c\.branch_3\.1\.conv3d\.weight'"):
        map_i3d_kinetics_state_dict(missing)
    for extra in ("mixed_5d.branch_0.conv3d.weight", "mixed_4b.branch_0.conv3d.bias", "logits.weight"):
        with pytest.raises(StadError, match=f"unexpected key '{extra}'"):
            map_i3d_kinetics_state_dict({**kinetics, extra: torch.zeros(1)})
