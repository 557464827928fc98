"""Inception-I3D video backbone (Carreira & Zisserman, "Quo Vadis, Action Recognition?", CVPR 2017) as STEP uses it.

STEP ("Spatio-Temporal Progressive Learning for Video Action Detection", Yang et al., CVPR 2019) runs I3D up to
``Mixed_4f`` as its shared backbone and gives the context net and each of its heads an own copy of
``Mixed_5b`` + ``Mixed_5c``. Written anew from the facts in ``shared/methods/STEP.md`` §3 and §9 (no code was
copied). Flow of :class:`InceptionI3D` (channels at ``channel_divisor=1``; ``/8`` in brackets)::

    x [B, 3, T, H, W]
      conv3d_1a_7x7    7x7x7 / 2      64 (8)       [B,  64, T/2, H/2, W/2]
      maxpool3d_2a_3x3 1x3x3 / 1,2,2                [B,  64, T/2, H/4, W/4]
      conv3d_2b_1x1    1x1x1          64 (8)
      conv3d_2c_3x3    3x3x3         192 (24)
      maxpool3d_3a_3x3 1x3x3 / 1,2,2                [B, 192, T/2, H/8, W/8]
      mixed_3b, mixed_3c             256, 480 (32, 60)
      maxpool3d_4a_3x3 3x3x3 / 2                    [B, 480, T/4, H/16, W/16]
      mixed_4b .. mixed_4f           512, 512, 512, 528, 832 (64, 64, 64, 66, 104)
    -> [B, 832, T', H', W'],  T' = ceil(ceil(T/2)/2),  H' = ceil(H/16),  W' = ceil(W/16)

:func:`mixed5` builds ``mixed_5b`` (832 -> 832) + ``mixed_5c`` (-> 1024), which keep T, H and W.
A Mixed block concatenates 4 branches (``branch_0``: 1x1x1; ``branch_1`` / ``branch_2``: 1x1x1 -> 3x3x3;
``branch_3``: 3x3x3/1 max pool -> 1x1x1); its 6 numbers ``[b0, b1a, b1b, b2a, b2b, b3]`` give
``b0 + b1b + b2b + b3`` output channels.

Padding (TensorFlow "SAME"):

* :class:`Unit3D` (conv without bias -> BatchNorm3d eps 1e-5 -> ReLU) pads every dimension of size ``n`` by
  ``p = max((ceil(n/s) - 1)*s + k - n, 0)`` zeros, ``floor(p/2)`` before and ``ceil(p/2)`` after, so the output
  has ``ceil(n/s)`` cells (:func:`tf_same_padding`). At stride 1, and at stride 2 on even sizes (all of STEP's
  400x400x36 clips), ``p = max(k - s, 0)`` whatever ``n``; on odd sizes the rule keeps ``ceil(n/s)`` cells.
* :class:`MaxPool3dSame` pads ``max(k - s, 0)`` zeros split floor/ceil, then max-pools with ``ceil_mode=True``
  (:func:`pool_padding`), which also gives ``ceil(n/s)`` cells.

Batch norm: with ``frozen_bn=True`` (STEP's ``freeze_affine`` + ``freeze_stats``) every norm is a
:class:`FrozenBatchNorm3d`: buffers only (no parameters, no gradients), always the running statistics, so
``train()`` does not change the outputs. :func:`freeze_batchnorm` converts a module built with
``frozen_bn=False`` (plain, trainable ``nn.BatchNorm3d``) the same way.

Weight files (key tables; every Unit3D holds ``conv3d.weight`` and ``batch3d.{weight, bias, running_mean,
running_var}``; ``num_batches_tracked`` is dropped; a Mixed block holds the units ``branch_0``, ``branch_1.0``,
``branch_1.1``, ``branch_2.0``, ``branch_2.1``, ``branch_3.1`` (``branch_3.0`` is the pool) in every layout):

STEP release ``base_net`` (:func:`map_step_base_net_state_dict`; ``i`` = position in STEP's ``nn.Sequential``)

====================================  =====================================
STEP key                              :class:`InceptionI3D` key
====================================  =====================================
``module.base_model.0.*``             ``conv3d_1a_7x7.*``
``module.base_model.2.*``             ``conv3d_2b_1x1.*``
``module.base_model.3.*``             ``conv3d_2c_3x3.*``
``module.base_model.5.*`` / ``6.*``   ``mixed_3b.*`` / ``mixed_3c.*``
``module.base_model.8.*`` .. ``12.*`` ``mixed_4b.*`` .. ``mixed_4f.*``
====================================  =====================================

(positions 1, 4 and 7 are the parameter-free pools.)

STEP release ``context_net`` and ``det_net{k}`` (:func:`map_step_mixed5_state_dict`)

===============================================  ==========================
STEP key                                         :func:`mixed5` key
===============================================  ==========================
``module.i3d_conv_context.1.*`` / ``.2.*``       ``mixed_5b.*`` / ``mixed_5c.*``
``i3d_conv.0.*`` / ``i3d_conv.1.*``              ``mixed_5b.*`` / ``mixed_5c.*``
===============================================  ==========================

Bare Kinetics I3D file ``i3d_kinetics.pth`` (:func:`map_i3d_kinetics_state_dict`): the names are ours already,
``conv3d_1a_7x7.*``, ``conv3d_2b_1x1.*``, ``conv3d_2c_3x3.*``, ``mixed_3b.*`` .. ``mixed_4f.*`` go to the backbone,
``mixed_5b.*`` and ``mixed_5c.*`` to a :func:`mixed5` copy, and the logits ``conv3d_0c_1x1.*`` are dropped.

A mapped state dict loads with ``load_state_dict(strict=True)`` into a ``frozen_bn=True`` module. A
``frozen_bn=False`` module also has ``num_batches_tracked`` counters: load it with
``stad.models.checkpoints.load_state_dict_strict``, which keeps the module's own counters.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from stad.errors import StadError

__all__ = [
    "FrozenBatchNorm3d",
    "InceptionI3D",
    "MaxPool3dSame",
    "Mixed",
    "Unit3D",
    "freeze_batchnorm",
    "map_i3d_kinetics_state_dict",
    "map_step_base_net_state_dict",
    "map_step_mixed5_state_dict",
    "mixed5",
    "pool_padding",
    "tf_same_padding",
]

# Mixed block widths [b0, b1a, b1b, b2a, b2b, b3] at channel_divisor 1 (STEP.md §3).
MIXED_CHANNELS: dict[str, tuple[int, int, int, int, int, int]] = {
    "mixed_3b": (64, 96, 128, 16, 32, 32),
    "mixed_3c": (128, 128, 192, 32, 96, 64),
    "mixed_4b": (192, 96, 208, 16, 48, 64),
    "mixed_4c": (160, 112, 224, 24, 64, 64),
    "mixed_4d": (128, 128, 256, 24, 64, 64),
    "mixed_4e": (112, 144, 288, 32, 64, 64),
    "mixed_4f": (256, 160, 320, 32, 128, 128),
    "mixed_5b": (256, 160, 320, 32, 128, 128),
    "mixed_5c": (384, 192, 384, 48, 128, 128),
}
STEM_CHANNELS: dict[str, int] = {"conv3d_1a_7x7": 64, "conv3d_2b_1x1": 64, "conv3d_2c_3x3": 192}

# STEP's base_net nn.Sequential positions of the layers with parameters (STEP.md §9).
STEP_BASE_NET_INDEX: dict[int, str] = {
    0: "conv3d_1a_7x7", 2: "conv3d_2b_1x1", 3: "conv3d_2c_3x3", 5: "mixed_3b", 6: "mixed_3c",
    8: "mixed_4b", 9: "mixed_4c", 10: "mixed_4d", 11: "mixed_4e", 12: "mixed_4f",
}
# Position of Mixed_5b in STEP's Sequentials (Mixed_5c follows it): context_net has a pool at 0.
STEP_MIXED5_FIRST_INDEX: dict[str, int] = {"i3d_conv_context": 1, "i3d_conv": 0}

_BACKBONE_LAYERS = ("conv3d_1a_7x7", "conv3d_2b_1x1", "conv3d_2c_3x3", "mixed_3b", "mixed_3c",
                    "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e", "mixed_4f")
_MIXED5_LAYERS = ("mixed_5b", "mixed_5c")
_MIXED_UNITS = ("branch_0", "branch_1.0", "branch_1.1", "branch_2.0", "branch_2.1", "branch_3.1")
_UNIT_KEYS = ("conv3d.weight", "batch3d.weight", "batch3d.bias", "batch3d.running_mean", "batch3d.running_var")
_KINETICS_LOGITS = "conv3d_0c_1x1"

Size3 = tuple[int, int, int]


def _triple(value: int | Size3) -> Size3:
    return (value, value, value) if isinstance(value, int) else tuple(value)  # type: ignore[return-value]


def tf_same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "SAME" zero padding ``(before, after)`` of one dimension of ``size`` cells.

    ``p = max((ceil(size/stride) - 1)*stride + kernel - size, 0)``, split ``floor(p/2)`` before and the rest after;
    the convolution then gives ``ceil(size/stride)`` cells. E.g. ``(36, 7, 2) -> (2, 3)``, ``(37, 7, 2) -> (3, 3)``.
    """
    out = math.ceil(size / stride)
    pad = max((out - 1) * stride + kernel - size, 0)
    return pad // 2, pad - pad // 2


def pool_padding(kernel: int, stride: int) -> tuple[int, int]:
    """Zero padding ``(before, after)`` of :class:`MaxPool3dSame`: ``max(kernel - stride, 0)`` split floor/ceil."""
    pad = max(kernel - stride, 0)
    return pad // 2, pad - pad // 2


class FrozenBatchNorm3d(nn.Module):
    """BatchNorm3d with fixed affine parameters and statistics (STEP's ``freeze_affine`` + ``freeze_stats``).

    ``weight``, ``bias``, ``running_mean`` and ``running_var`` ``(C,)`` are buffers, so they get no gradients,
    keep BatchNorm3d's state-dict names and always normalise, in ``train()`` as in ``eval()``. A
    ``num_batches_tracked`` entry in a loaded state dict is ignored.

    Shapes: ``(N, C, T, H, W) -> (N, C, T, H, W)``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # type: ignore[no-untyped-def]
        state_dict.pop(prefix + "num_batches_tracked", None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``nn.BatchNorm3d`` inside ``module`` by a :class:`FrozenBatchNorm3d` with its values.

    Works in place on the children; returns ``module`` (or its replacement when ``module`` itself is a BatchNorm3d).
    """
    if isinstance(module, nn.BatchNorm3d):
        frozen = FrozenBatchNorm3d(module.num_features, eps=module.eps)
        with torch.no_grad():
            if module.affine:
                frozen.weight.copy_(module.weight)
                frozen.bias.copy_(module.bias)
            if module.track_running_stats:
                frozen.running_mean.copy_(module.running_mean)
                frozen.running_var.copy_(module.running_var)
        return frozen
    for name, child in module.named_children():
        new = freeze_batchnorm(child)
        if new is not child:
            setattr(module, name, new)
    return module


class Unit3D(nn.Module):
    """Conv3d (no bias) -> BatchNorm3d (eps 1e-5) -> ReLU with TensorFlow "SAME" padding.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: ``k`` or ``(kt, kh, kw)``.
        stride: ``s`` or ``(st, sh, sw)`` (default 1).
        frozen_bn: :class:`FrozenBatchNorm3d` (default True) or a trainable ``nn.BatchNorm3d``.

    Shapes: ``(N, in_channels, T, H, W) -> (N, out_channels, ceil(T/st), ceil(H/sh), ceil(W/sw))``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int | Size3, stride: int | Size3 = 1, *, frozen_bn: bool = True
    ) -> None:
        super().__init__()
        self.kernel_size = _triple(kernel_size)
        self.stride = _triple(stride)
        self.out_channels = out_channels
        self.conv3d = nn.Conv3d(in_channels, out_channels, self.kernel_size, stride=self.stride, bias=False)
        self.batch3d: nn.Module = FrozenBatchNorm3d(out_channels) if frozen_bn else nn.BatchNorm3d(out_channels, eps=1e-5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sizes = x.shape[-3:]  # T, H, W
        pads = [tf_same_padding(n, k, s) for n, k, s in zip(sizes, self.kernel_size, self.stride)]
        if any(p != (0, 0) for p in pads):
            x = F.pad(x, (*pads[2], *pads[1], *pads[0]))  # F.pad order: W, H, T
        return F.relu(self.batch3d(self.conv3d(x)))


class MaxPool3dSame(nn.Module):
    """Zero padding ``max(k - s, 0)`` per dimension (floor before / ceil after), then MaxPool3d ``ceil_mode=True``.

    Args:
        kernel_size: ``k`` or ``(kt, kh, kw)``.
        stride: ``s`` or ``(st, sh, sw)``.

    Shapes: ``(N, C, T, H, W) -> (N, C, ceil(T/st), ceil(H/sh), ceil(W/sw))``.
    """

    def __init__(self, kernel_size: int | Size3, stride: int | Size3) -> None:
        super().__init__()
        kernel, strides = _triple(kernel_size), _triple(stride)
        t, h, w = (pool_padding(k, s) for k, s in zip(kernel, strides))
        self.pad = (*w, *h, *t)  # F.pad order: W, H, T
        self.pool = nn.MaxPool3d(kernel, strides, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.pad(x, self.pad))


class Mixed(nn.Module):
    """Inception block: 4 branches concatenated along channels.

    ::

        x ─┬─ branch_0: 1x1x1 (b0) ───────────────────────┐
           ├─ branch_1: 1x1x1 (b1a) -> 3x3x3 (b1b) ────────┤
           ├─ branch_2: 1x1x1 (b2a) -> 3x3x3 (b2b) ────────┼─ concat -> b0 + b1b + b2b + b3
           └─ branch_3: max pool 3x3x3/1 -> 1x1x1 (b3) ────┘

    Args:
        in_channels: input channels.
        channels: ``(b0, b1a, b1b, b2a, b2b, b3)``.
        frozen_bn: frozen (default) or trainable batch norm in every unit.

    Shapes: ``(N, in_channels, T, H, W) -> (N, out_channels, T, H, W)``.
    """

    def __init__(self, in_channels: int, channels: Iterable[int], *, frozen_bn: bool = True) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3 = channels
        self.branch_0 = Unit3D(in_channels, b0, 1, frozen_bn=frozen_bn)
        self.branch_1 = nn.Sequential(Unit3D(in_channels, b1a, 1, frozen_bn=frozen_bn), Unit3D(b1a, b1b, 3, frozen_bn=frozen_bn))
        self.branch_2 = nn.Sequential(Unit3D(in_channels, b2a, 1, frozen_bn=frozen_bn), Unit3D(b2a, b2b, 3, frozen_bn=frozen_bn))
        self.branch_3 = nn.Sequential(MaxPool3dSame(3, 1), Unit3D(in_channels, b3, 1, frozen_bn=frozen_bn))
        self.out_channels = b0 + b1b + b2b + b3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = (self.branch_0, self.branch_1, self.branch_2, self.branch_3)
        return torch.cat([branch(x) for branch in branches], dim=1)  # [N, out_channels, T, H, W]


def _divide(channel_divisor: int) -> dict[str, tuple[int, ...]]:
    """Every I3D channel count divided by ``channel_divisor`` (``ValueError`` naming the first that is not divisible)."""
    if not isinstance(channel_divisor, int) or channel_divisor < 1:
        raise ValueError(f"channel_divisor must be a positive int, got {channel_divisor!r}")
    table: dict[str, tuple[int, ...]] = {name: (c,) for name, c in STEM_CHANNELS.items()}
    table.update(MIXED_CHANNELS)
    for name, counts in table.items():
        for count in counts:
            if count % channel_divisor:
                raise ValueError(f"channel_divisor {channel_divisor} does not divide the channel count {count} of {name}")
    return {name: tuple(c // channel_divisor for c in counts) for name, counts in table.items()}


class InceptionI3D(nn.Module):
    """Inception-I3D from ``conv3d_1a_7x7`` to ``mixed_4f`` (STEP's backbone), stride 16 in space, 4 in time.

    Args:
        in_chans: input channels (default 3, RGB).
        channel_divisor: divide every channel count by it (default 1; 8 gives the CPU-sized network of STEP.md §9:
            conv 8, 8, 24; Mixed_3b/3c 32, 60; Mixed_4b-4f 64, 64, 64, 66, 104). ``ValueError`` if it does not divide
            every count (1, 2, 4 and 8 do).
        frozen_bn: :class:`FrozenBatchNorm3d` everywhere (default, STEP's setting) or trainable ``nn.BatchNorm3d``.

    Attributes:
        out_channels: channels of the returned map (832 at divisor 1, 104 at 8).
        stride: 16, input pixels per output cell in H and W.
    """

    def __init__(self, *, in_chans: int = 3, channel_divisor: int = 1, frozen_bn: bool = True) -> None:
        super().__init__()
        ch = _divide(channel_divisor)
        c1a, c2b, c2c = ch["conv3d_1a_7x7"][0], ch["conv3d_2b_1x1"][0], ch["conv3d_2c_3x3"][0]
        self.conv3d_1a_7x7 = Unit3D(in_chans, c1a, 7, 2, frozen_bn=frozen_bn)
        self.maxpool3d_2a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.conv3d_2b_1x1 = Unit3D(c1a, c2b, 1, frozen_bn=frozen_bn)
        self.conv3d_2c_3x3 = Unit3D(c2b, c2c, 3, frozen_bn=frozen_bn)
        self.maxpool3d_3a_3x3 = MaxPool3dSame((1, 3, 3), (1, 2, 2))
        self.mixed_3b = Mixed(c2c, ch["mixed_3b"], frozen_bn=frozen_bn)
        self.mixed_3c = Mixed(self.mixed_3b.out_channels, ch["mixed_3c"], frozen_bn=frozen_bn)
        self.maxpool3d_4a_3x3 = MaxPool3dSame(3, 2)
        self.mixed_4b = Mixed(self.mixed_3c.out_channels, ch["mixed_4b"], frozen_bn=frozen_bn)
        self.mixed_4c = Mixed(self.mixed_4b.out_channels, ch["mixed_4c"], frozen_bn=frozen_bn)
        self.mixed_4d = Mixed(self.mixed_4c.out_channels, ch["mixed_4d"], frozen_bn=frozen_bn)
        self.mixed_4e = Mixed(self.mixed_4d.out_channels, ch["mixed_4e"], frozen_bn=frozen_bn)
        self.mixed_4f = Mixed(self.mixed_4e.out_channels, ch["mixed_4f"], frozen_bn=frozen_bn)
        self.out_channels: int = self.mixed_4f.out_channels
        self.stride = 16

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, in_chans, T, H, W]`` -> Mixed_4f map ``[B, out_channels, ceil(ceil(T/2)/2), ceil(H/16), ceil(W/16)]``."""
        if x.dim() != 5:
            raise ValueError(f"Expected a clip tensor of shape [B, C, T, H, W], got {tuple(x.shape)}.")
        for layer in self.children():  # registration order is the layer order above
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)


def mixed5(in_channels: int, *, channel_divisor: int = 1, frozen_bn: bool = True) -> nn.Sequential:
    """A fresh ``mixed_5b`` + ``mixed_5c`` pair (STEP's context net and each head own one).

    Args:
        in_channels: channels of the input map, as they are (e.g. ``InceptionI3D(...).out_channels``: 832, or 104 at /8).
        channel_divisor: divide every channel count by it, as for :class:`InceptionI3D`.
        frozen_bn: frozen (default) or trainable batch norm.

    Returns:
        ``nn.Sequential(mixed_5b, mixed_5c)`` with ``out_channels`` (1024 at divisor 1, 128 at 8):
        ``[N, in_channels, T, H, W] -> [N, out_channels, T, H, W]``.
    """
    ch = _divide(channel_divisor)
    block_5b = Mixed(in_channels, ch["mixed_5b"], frozen_bn=frozen_bn)
    block_5c = Mixed(block_5b.out_channels, ch["mixed_5c"], frozen_bn=frozen_bn)
    seq = nn.Sequential(OrderedDict(mixed_5b=block_5b, mixed_5c=block_5c))
    seq.out_channels = block_5c.out_channels  # type: ignore[assignment]
    return seq


# --------------------------------------------------------------------------------------------------------------
# Key mapping of the original weight files (tables in the module docstring).


def _layer_keys(layer: str) -> list[str]:
    """Our state-dict keys of one layer (a stem Unit3D or a Mixed block), ``num_batches_tracked`` excluded."""
    units = [""] if layer.startswith("conv3d_") else [u + "." for u in _MIXED_UNITS]
    return [f"{layer}.{unit}{key}" for unit in units for key in _UNIT_KEYS]


def _strip_module(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _remap(
    state_dict: Mapping[str, torch.Tensor], layer_map: Mapping[str, str], *, in_prefix: str, source: str
) -> dict[str, torch.Tensor]:
    """Map the keys ``{in_prefix}{theirs}.{rest}`` of ``state_dict`` to ``{layer_map[theirs]}.{rest}``, strictly.

    Keys are compared after stripping a leading ``module.``; ``num_batches_tracked`` is dropped. Every expected key
    of the target layers must be present and no other key may start with ``in_prefix``.
    """
    expected = {f"{in_prefix}{theirs}{key[len(ours):]}": key for theirs, ours in layer_map.items() for key in _layer_keys(ours)}
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        bare = _strip_module(key)
        if not bare.startswith(in_prefix) or bare.endswith(".num_batches_tracked"):
            continue
        if bare not in expected:
            raise StadError(f"{source}: unexpected key {key!r}")
        out[expected[bare]] = value
    missing = sorted(set(expected) - {_strip_module(k) for k in state_dict})
    if missing:
        raise StadError(f"{source}: missing key {missing[0]!r}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    return out


def map_step_base_net_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map STEP's released ``base_net`` (``module.base_model.{i}.*``) to :class:`InceptionI3D` keys.

    Args:
        state_dict: the checkpoint's ``"base_net"`` entry (the ``module.`` prefix is optional).

    Returns:
        A new dict (same tensors) for ``InceptionI3D(...).load_state_dict(strict=True)``.

    Raises:
        StadError: naming an unexpected key (anything outside the table, e.g. a position without parameters) or the
            first missing one.
    """
    for key in state_dict:
        if not _strip_module(key).startswith("base_model."):
            raise StadError(f"STEP base_net: unexpected key {key!r}")
    layer_map = {str(i): name for i, name in STEP_BASE_NET_INDEX.items()}
    return _remap(state_dict, layer_map, in_prefix="base_model.", source="STEP base_net")


def map_step_mixed5_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Map STEP's Mixed_5b/5c copy under ``prefix`` to the keys of a :func:`mixed5` module.

    Args:
        state_dict: the checkpoint's ``"context_net"`` or ``"det_net{k}"`` entry.
        prefix: ``"module.i3d_conv_context"`` (context net: Mixed_5b/5c at positions 1/2 after a pool) or
            ``"i3d_conv"`` (a head: positions 0/1). A leading ``module.`` and a trailing dot are optional, on the
            prefix and on the keys alike. Keys outside the prefix (the heads' other layers) are ignored.

    Returns:
        A new dict ``mixed_5b.*`` / ``mixed_5c.*`` (same tensors) for ``mixed5(...).load_state_dict(strict=True)``.

    Raises:
        StadError: an unknown prefix, an unexpected key under the prefix, or a missing key (named).
    """
    name = _strip_module(prefix).rstrip(".")
    if name not in STEP_MIXED5_FIRST_INDEX:
        raise StadError(f"unknown STEP Mixed_5 prefix {prefix!r}; expected one of {sorted(STEP_MIXED5_FIRST_INDEX)}")
    first = STEP_MIXED5_FIRST_INDEX[name]
    layer_map = {str(first): "mixed_5b", str(first + 1): "mixed_5c"}
    return _remap(state_dict, layer_map, in_prefix=name + ".", source=f"STEP {name}")


def map_i3d_kinetics_state_dict(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split a bare Kinetics I3D state dict (``i3d_kinetics.pth``) into backbone and Mixed_5 weights.

    Args:
        state_dict: ``conv3d_1a_7x7.*`` ... ``mixed_5c.*`` plus the logits ``conv3d_0c_1x1.*`` (dropped).

    Returns:
        ``(backbone, mixed5)``: dicts (same tensors) for ``InceptionI3D(...)`` and ``mixed5(...)``
        ``.load_state_dict(strict=True)``.

    Raises:
        StadError: naming an unexpected or the first missing key.
    """
    source = "I3D Kinetics file"
    parts: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]] = ({}, {})
    for key, value in state_dict.items():
        layer = _strip_module(key).split(".", 1)[0]
        if layer in _BACKBONE_LAYERS:
            parts[0][key] = value
        elif layer in _MIXED5_LAYERS:
            parts[1][key] = value
        elif layer != _KINETICS_LOGITS:
            raise StadError(f"{source}: unexpected key {key!r}")
    backbone = _remap(parts[0], {name: name for name in _BACKBONE_LAYERS}, in_prefix="", source=source)
    heads = _remap(parts[1], {name: name for name in _MIXED5_LAYERS}, in_prefix="", source=source)
    return backbone, heads
