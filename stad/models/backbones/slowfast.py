"""SlowFast video backbone (Feichtenhofer et al., "SlowFast Networks for Video Recognition", ICCV 2019) as
ACAR-Net (Pan et al., CVPR 2021) and FBIL (Chen et al., ACM MM 2023) use it for AVA actor detection.

Built with pytorchvideo's ``create_slowfast`` (``pytorchvideo==0.1.5``; only ``pytorchvideo.models`` is imported,
``pytorchvideo.transforms`` does not import on current torchvision). How to express ACAR's layout with it, the
shapes, counts and key names are the facts of ``shared/methods/FBIL.md`` §3 and §8, read from the public code; no
code of ACAR-Net, FBIL or PySlowFast was copied. Flow of :class:`SlowFast` (R101: ``c = 64`` slow stem channels,
``r = 1/beta = 8``, ``alpha = 4``; shapes for a clip ``(B, 3, 32, 256, 455)``)::

    clip [B, 3, T, H, W]
      ├─ slow = clip[:, :, idx]      idx = ::alpha, or linspace(0, T-1, T/alpha) with slow_full_span
      │    [B, 3, T/alpha, H, W]                                         fast = clip [B, 3, T, H, W]
      ↓                                                                    ↓
    stem  conv (1,7,7)/(1,2,2), BN, ReLU, maxpool (1,3,3)/(1,2,2)       stem  conv (5,7,7)/(1,2,2) ...
      [B, 64, 8, 64, 114]   ⭠ lateral 1 (8 -> 16) ⭠                       [B, 8, 32, 64, 114]
    res2 (3 blocks, s 1)   in 64+16    -> [B, 256, 8, 64, 114]           res2  -> [B, 32, 32, 64, 114]
                            ⭠ lateral 2 (32 -> 64) ⭠
    res3 (4 blocks, s 2)   in 256+64   -> [B, 512, 8, 32, 57]            res3  -> [B, 64, 32, 32, 57]
                            ⭠ lateral 3 (64 -> 128) ⭠
    res4 (23 blocks, s 2)  in 512+128  -> [B, 1024, 8, 16, 29]           res4  -> [B, 128, 32, 16, 29]
                            ⭠ lateral 4 (128 -> 256) ⭠
    res5 (3 blocks, s 1, dilation 2) in 1024+256 -> [B, 2048, 8, 16, 29] res5  -> [B, 256, 32, 16, 29]
    -> [slow, fast], spatial size ceil(H/16) x ceil(W/16) (output stride 16: res5 keeps stride 1)

A lateral is a Conv3d fast -> slow with kernel ``(k, 1, 1)``, stride ``(alpha, 1, 1)``, padding ``(k//2, 0, 0)``,
no bias, ``2 * fast channels`` outputs; ``lateral="conv"`` (ACAR/FBIL R101, ``k = 5``) has nothing after it,
``lateral="conv_bn_relu"`` (ACAR R50, PySlowFast, ``k = 7``) adds BatchNorm and ReLU. Bottleneck blocks:
conv_a ``(kt,1,1)`` (slow ``kt`` = 1, 1, 3, 3 per stage, fast 3, 3, 3, 3), conv_b ``(1,3,3)``, conv_c ``1x1x1`` (x4),
each with BN; a 1x1x1 conv + BN shortcut on the first block of a stage. Depth 18 is pytorchvideo's one
bottleneck per stage.

Frozen batch norm (``freeze_bn=True``, ACAR's ``freeze_bn``): :meth:`SlowFast.train` keeps every BatchNorm in eval
mode, so the running statistics are used and never updated, while the affine weights stay ordinary trainable
parameters (weight decay applies as to any parameter).

Weight files. Our state-dict keys are pytorchvideo's (``blocks.*``). ``{p}`` is the pathway (0 slow, 1 fast),
``{s}`` the residual stage 1..4 (res2..res5), ``{i}`` the block in it, ``{k}`` the lateral 1..4:

===================================================  ===============================  =============================
pytorchvideo (ours)                                  ACAR-Net / FBIL                   PySlowFast
===================================================  ===============================  =============================
``blocks.0.multipathway_blocks.{p}.conv``            ``{slow|fast}_conv1``            ``s1.pathway{p}_stem.conv``
``blocks.0.multipathway_blocks.{p}.norm``            ``{slow|fast}_bn1``              ``s1.pathway{p}_stem.bn``
``blocks.{k-1}.multipathway_fusion.conv_fast_to_slow``  ``Tconv{k}`` or ``Tconv{k}.0``  ``s{k}_fuse.conv_f2s``
``blocks.{k-1}.multipathway_fusion.norm``            ``Tconv{k}.1``                   ``s{k}_fuse.bn``
``blocks.{s}.multipathway_blocks.{p}.res_blocks.{i}``  ``{slow|fast}_res{s}.{i}``       ``s{s+1}.pathway{p}_res{i}``
  ``.branch2.conv_a|norm_a``                           ``.conv1|bn1``                   ``.branch2.a|a_bn``
  ``.branch2.conv_b|norm_b``                           ``.conv2|bn2``                   ``.branch2.b|b_bn``
  ``.branch2.conv_c|norm_c``                           ``.conv3|bn3``                   ``.branch2.c|c_bn``
  ``.branch1_conv|branch1_norm``                       ``.downsample.0|downsample_bn``  ``.branch1|branch1_bn``
===================================================  ===============================  =============================

(ACAR writes a conv-only lateral as ``Tconv{k}.weight`` and a BN+ReLU one as the Sequential ``Tconv{k}.{0,1}``.)
The loaders read a file with ``torch.load(weights_only=True)`` (a file never runs code), unwrap a
``state_dict`` / ``model_state`` / ``model`` entry, reduce an ACAR/FBIL training checkpoint to its backbone
(``module.backbone.module.*``; the head's keys are left out), strip a ``module.`` prefix, skip PySlowFast's
classification head ``head.*`` and then load strictly: a missing or unexpected key or a shape mismatch is a
:class:`~stad.errors.StadError` that names the keys in the file's own layout. BatchNorm ``num_batches_tracked``
counters may be absent altogether (files converted from Caffe2); the model then keeps its own.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stad.data.safe_pickle import safe_torch_load
from stad.errors import StadError

with warnings.catch_warnings():
    # pytorchvideo 0.1.5 decorates functions with the deprecated torch.jit.script at import time.
    warnings.simplefilter("ignore", FutureWarning)
    from pytorchvideo.models.slowfast import FastToSlowFusionBuilder, create_slowfast

DEPTHS = (18, 50, 101, 152)
LATERALS = ("conv", "conv_bn_relu")
OUTPUT_STRIDE = 16


def slow_frame_indices(num_frames: int, alpha: int, *, full_span: bool = False) -> torch.Tensor:
    """The fast-clip frames the slow pathway sees.

    Args:
        num_frames: ``T``, frames of the fast clip; a multiple of ``alpha``.
        alpha: the frame-rate ratio fast / slow.
        full_span: False (ACAR R101, FBIL): every ``alpha``-th frame from the first, ``0, alpha, 2 alpha, ...``;
            True (ACAR R50, PySlowFast packing): ``linspace(0, T - 1, T // alpha)`` truncated, so the first and the
            last frame are both included (T=32, alpha=4: 0, 4, 8, 13, 17, 22, 26, 31).

    Returns:
        int64 tensor ``(T // alpha,)``.
    """
    if alpha < 1 or num_frames < alpha or num_frames % alpha:
        raise ValueError(f"the clip's {num_frames} frames must be a positive multiple of alpha={alpha}")
    if full_span:
        return torch.linspace(0, num_frames - 1, num_frames // alpha).long()
    return torch.arange(0, num_frames, alpha)


class SlowFast(nn.Module):
    """A two-pathway SlowFast trunk without head: one clip in, ``[slow, fast]`` feature maps out.

    Args:
        blocks: the stem + residual stages of a pytorchvideo SlowFast (``MultiPathWayWithFuse`` modules whose
            input and output are ``[slow, fast]`` lists), e.g. ``create_slowfast(head=None).blocks[:-1]``.
        alpha: frame-rate ratio fast / slow; the forward pass subsamples the slow pathway itself.
        out_channels: ``(slow, fast)`` channels of the last stage.
        slow_full_span: the slow frame rule of :func:`slow_frame_indices` (default False: ``::alpha``).
        freeze_bn: keep every BatchNorm in eval mode, also under ``train()`` (default True).

    Attributes:
        out_channels: ``(slow_channels, fast_channels)`` of the returned maps.
        output_stride: 16: the maps have ``ceil(H / 16) x ceil(W / 16)`` cells.
    """

    output_stride: int = OUTPUT_STRIDE

    def __init__(
        self,
        blocks: nn.ModuleList,
        *,
        alpha: int,
        out_channels: tuple[int, int],
        slow_full_span: bool = False,
        freeze_bn: bool = True,
    ) -> None:
        super().__init__()
        self.blocks = blocks
        self.alpha = alpha
        self.out_channels = tuple(out_channels)
        self.slow_full_span = slow_full_span
        self.freeze_bn = freeze_bn
        self.train(True)

    def train(self, mode: bool = True) -> SlowFast:
        """Set train/eval mode; with ``freeze_bn`` every BatchNorm stays in eval mode (running statistics)."""
        super().train(mode)
        if self.freeze_bn:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward_pathways(self, pathways: list[torch.Tensor]) -> list[torch.Tensor]:
        """``[slow (B, 3, T/alpha, H, W), fast (B, 3, T, H, W)]`` -> ``[slow (B, Cs, T/alpha, H/16, W/16),
        fast (B, Cf, T, H/16, W/16)]`` (``/16`` rounded up), for a caller that samples the slow frames itself."""
        pathways = list(pathways)  # the pytorchvideo blocks replace the list's items in place
        for block in self.blocks:
            pathways = block(pathways)
        return pathways

    def forward_features(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """Normalised clip ``(B, 3, T, H, W)`` (``T`` a multiple of ``alpha``) -> ``[slow, fast]``:
        slow ``(B, out_channels[0], T/alpha, ceil(H/16), ceil(W/16))``, fast ``(B, out_channels[1], T, ceil(H/16),
        ceil(W/16))``."""
        if clip.dim() != 5:
            raise ValueError(f"expected a clip of shape (B, 3, T, H, W), got {tuple(clip.shape)}")
        index = slow_frame_indices(clip.shape[2], self.alpha, full_span=self.slow_full_span).to(clip.device)
        slow = clip.index_select(2, index)  # [B, 3, T/alpha, H, W]
        return self.forward_pathways([slow, clip])

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        return self.forward_features(clip)


def build_slowfast(
    depth: int = 101,
    *,
    # Widths: slow stem channels and the slow/fast channel ratio 1/beta.
    width: int = 64,
    beta_inv: int = 8,
    # Time: fast/slow frame-rate ratio and the slow frame rule.
    alpha: int = 4,
    slow_full_span: bool = False,
    # Fast -> slow laterals.
    lateral: str = "conv",
    lateral_kernel: int = 5,
    # res5 and batch norm.
    res5_dilation: int = 2,
    freeze_bn: bool = True,
) -> SlowFast:
    """Build a SlowFast trunk in ACAR-Net's layout with pytorchvideo's ``create_slowfast``.

    Args:
        depth: ResNet depth, one of 18, 50, 101, 152 (default 101; 18 = one bottleneck per stage).
        width: slow stem channels ``c`` (default 64); the slow stages have 4c, 8c, 16c, 32c channels.
        beta_inv: ``1 / beta``, slow / fast channel ratio (default 8); ``width`` must be a multiple of it.
        alpha: fast / slow frame-rate ratio (default 4); also the laterals' temporal stride.
        slow_full_span: slow frame rule of :func:`slow_frame_indices` (default False: ``::alpha``).
        lateral: ``"conv"`` (conv only, ACAR/FBIL R101; default) or ``"conv_bn_relu"`` (ACAR R50, PySlowFast).
        lateral_kernel: odd temporal kernel of the laterals (default 5; ACAR R50 and PySlowFast: 7).
        res5_dilation: spatial dilation of res5's 3x3 convs (default 2); res5 has spatial stride 1 either way.
        freeze_bn: BatchNorms stay in eval mode under ``train()`` (default True).

    Returns:
        :class:`SlowFast` with ``out_channels = (32 * width, 32 * width // beta_inv)``.
    """
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth}")
    if lateral not in LATERALS:
        raise ValueError(f"lateral must be one of {LATERALS}, got {lateral!r}")
    if lateral_kernel < 1 or lateral_kernel % 2 == 0:
        raise ValueError(f"lateral_kernel must be a positive odd number, got {lateral_kernel}")
    if beta_inv < 1 or width < beta_inv or width % beta_inv:
        raise ValueError(f"width must be a positive multiple of beta_inv, got width={width}, beta_inv={beta_inv}")
    if alpha < 1 or res5_dilation < 1:
        raise ValueError(f"alpha and res5_dilation must be >= 1, got {alpha} and {res5_dilation}")
    with_norm = lateral == "conv_bn_relu"
    fusion = FastToSlowFusionBuilder(
        slowfast_channel_reduction_ratio=beta_inv,
        conv_fusion_channel_ratio=2,
        conv_kernel_size=(lateral_kernel, 1, 1),
        conv_stride=(alpha, 1, 1),
        norm=nn.BatchNorm3d if with_norm else None,
        activation=nn.ReLU if with_norm else None,
        max_stage_idx=3,  # laterals after the stem and res2..res4; none after res5
    )
    dilations = ((1, 1, 1), (1, 1, 1), (1, 1, 1), (1, res5_dilation, res5_dilation))
    net = create_slowfast(
        slowfast_channel_reduction_ratio=(beta_inv,),
        slowfast_conv_channel_fusion_ratio=2,
        fusion_builder=fusion.create_module,
        model_depth=depth,
        stem_dim_outs=(width, width // beta_inv),
        stage_spatial_strides=((1, 2, 2, 1), (1, 2, 2, 1)),
        stage_conv_b_dilations=(dilations, dilations),
        head=None,
        head_pool=None,
    )
    # The last block is a PoolConcatPathway (pools and concatenates the pathways): not part of the trunk.
    blocks = nn.ModuleList(list(net.blocks)[:-1])
    return SlowFast(
        blocks,
        alpha=alpha,
        out_channels=(32 * width, 32 * width // beta_inv),
        slow_full_span=slow_full_span,
        freeze_bn=freeze_bn,
    )


def slowfast_r101_acar(**overrides: Any) -> SlowFast:
    """FBIL / ACAR-Net SlowFast-R101 (Kinetics-700): alpha 4, beta 1/8, conv-only k5 laterals, ``::4`` slow frames,
    res5 dilation 2, frozen BN; 61,904,040 parameters, output channels (2048, 256)."""
    kwargs: dict[str, Any] = dict(depth=101, width=64, beta_inv=8, alpha=4, lateral="conv", lateral_kernel=5,
                                  slow_full_span=False, res5_dilation=2, freeze_bn=True)
    return build_slowfast(**{**kwargs, **overrides})


def slowfast_r50_acar(**overrides: Any) -> SlowFast:
    """ACAR-Net SlowFast-R50 (Kinetics-400): alpha 4, beta 1/8, k7 conv+BN+ReLU laterals, full-span slow frames,
    res5 dilation 2, frozen BN; 33,644,488 parameters, output channels (2048, 256)."""
    kwargs: dict[str, Any] = dict(depth=50, width=64, beta_inv=8, alpha=4, lateral="conv_bn_relu", lateral_kernel=7,
                                  slow_full_span=True, res5_dilation=2, freeze_bn=True)
    return build_slowfast(**{**kwargs, **overrides})


def slowfast_tiny(**overrides: Any) -> SlowFast:
    """CPU-sized SlowFast keeping every mechanism (FBIL.md §8): depth 18, c 8, beta 1/4 (slow 32..256, fast
    8..64 channels), alpha 4, conv-only k5 laterals, res5 dilation 2, frozen BN; 210,858 parameters, output
    channels (256, 64)."""
    kwargs: dict[str, Any] = dict(depth=18, width=8, beta_inv=4, alpha=4, lateral="conv", lateral_kernel=5,
                                  slow_full_span=False, res5_dilation=2, freeze_bn=True)
    return build_slowfast(**{**kwargs, **overrides})


# --------------------------------------------------------------------------------------------------------------
# Key maps (tables in the module docstring). Leaf names (``weight``, ``running_mean`` ...) are kept as they are.

_PATHWAYS = ("slow", "fast")
_ACAR_RES = {
    "conv1": "branch2.conv_a", "bn1": "branch2.norm_a", "conv2": "branch2.conv_b", "bn2": "branch2.norm_b",
    "conv3": "branch2.conv_c", "bn3": "branch2.norm_c", "downsample.0": "branch1_conv", "downsample_bn": "branch1_norm",
}
_PYSF_RES = {
    "branch2.a": "branch2.conv_a", "branch2.a_bn": "branch2.norm_a", "branch2.b": "branch2.conv_b",
    "branch2.b_bn": "branch2.norm_b", "branch2.c": "branch2.conv_c", "branch2.c_bn": "branch2.norm_c",
    "branch1": "branch1_conv", "branch1_bn": "branch1_norm",
}
_PV_TO_ACAR_RES = {ours: theirs for theirs, ours in _ACAR_RES.items()}
_PV_TO_PYSF_RES = {ours: theirs for theirs, ours in _PYSF_RES.items()}


def _alternatives(names: Mapping[str, str] | tuple[str, ...]) -> str:
    return "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))


_PV_STEM = re.compile(r"^blocks\.0\.multipathway_blocks\.([01])\.(conv|norm)\.(\w+)$")
_PV_FUSE = re.compile(r"^blocks\.(\d+)\.multipathway_fusion\.(conv_fast_to_slow|norm)\.(\w+)$")
_PV_RES = re.compile(
    rf"^blocks\.([1-9]\d*)\.multipathway_blocks\.([01])\.res_blocks\.(\d+)\.({_alternatives(_PV_TO_ACAR_RES)})\.(\w+)$"
)
_ACAR_STEM = re.compile(r"^(slow|fast)_(conv1|bn1)\.(\w+)$")
_ACAR_FUSE = re.compile(r"^Tconv([1-9]\d*)\.(?:(0|1)\.)?(\w+)$")
_ACAR_RES_KEY = re.compile(rf"^(slow|fast)_res([1-9]\d*)\.(\d+)\.({_alternatives(_ACAR_RES)})\.(\w+)$")
_PYSF_STEM = re.compile(r"^s1\.pathway([01])_stem\.(conv|bn)\.(\w+)$")
_PYSF_FUSE = re.compile(r"^s([1-9]\d*)_fuse\.(conv_f2s|bn)\.(\w+)$")
_PYSF_RES_KEY = re.compile(rf"^s([2-9]|[1-9]\d+)\.pathway([01])_res(\d+)\.({_alternatives(_PYSF_RES)})\.(\w+)$")


def acar_to_pytorchvideo_key(key: str) -> str:
    """ACAR-Net / FBIL backbone key (e.g. ``slow_res3.22.conv3.weight``) -> ours
    (``blocks.3.multipathway_blocks.0.res_blocks.22.branch2.conv_c.weight``).

    Raises:
        StadError: a key outside the layout, named.
    """
    if m := _ACAR_STEM.match(key):
        part = "conv" if m[2] == "conv1" else "norm"
        return f"blocks.0.multipathway_blocks.{_PATHWAYS.index(m[1])}.{part}.{m[3]}"
    if m := _ACAR_FUSE.match(key):
        part = "norm" if m[2] == "1" else "conv_fast_to_slow"
        return f"blocks.{int(m[1]) - 1}.multipathway_fusion.{part}.{m[3]}"
    if m := _ACAR_RES_KEY.match(key):
        return f"blocks.{m[2]}.multipathway_blocks.{_PATHWAYS.index(m[1])}.res_blocks.{m[3]}.{_ACAR_RES[m[4]]}.{m[5]}"
    raise StadError(f"unexpected key {key!r} for an ACAR-Net SlowFast")


def pytorchvideo_to_acar_key(key: str, *, lateral_norm: bool = False) -> str:
    """Our key -> ACAR-Net's; ``lateral_norm`` selects the ``Tconv{k}.0`` / ``.1`` layout of BN+ReLU laterals
    (conv-only laterals are ``Tconv{k}.weight``)."""
    if m := _PV_STEM.match(key):
        part = "conv1" if m[2] == "conv" else "bn1"
        return f"{_PATHWAYS[int(m[1])]}_{part}.{m[3]}"
    if m := _PV_FUSE.match(key):
        part = ("0." if m[2] == "conv_fast_to_slow" else "1.") if lateral_norm else ""
        if m[2] == "norm" and not lateral_norm:
            raise StadError(f"key {key!r} is a lateral BatchNorm: map it with lateral_norm=True")
        return f"Tconv{int(m[1]) + 1}.{part}{m[3]}"
    if m := _PV_RES.match(key):
        return f"{_PATHWAYS[int(m[2])]}_res{m[1]}.{m[3]}.{_PV_TO_ACAR_RES[m[4]]}.{m[5]}"
    raise StadError(f"key {key!r} is not a pytorchvideo SlowFast trunk key")


def pyslowfast_to_pytorchvideo_key(key: str) -> str:
    """PySlowFast key (e.g. ``s4.pathway1_res5.branch2.b_bn.weight``) -> ours
    (``blocks.3.multipathway_blocks.1.res_blocks.5.branch2.norm_b.weight``).

    Raises:
        StadError: a key outside the layout, named.
    """
    if m := _PYSF_STEM.match(key):
        part = "conv" if m[2] == "conv" else "norm"
        return f"blocks.0.multipathway_blocks.{m[1]}.{part}.{m[3]}"
    if m := _PYSF_FUSE.match(key):
        part = "conv_fast_to_slow" if m[2] == "conv_f2s" else "norm"
        return f"blocks.{int(m[1]) - 1}.multipathway_fusion.{part}.{m[3]}"
    if m := _PYSF_RES_KEY.match(key):
        return f"blocks.{int(m[1]) - 1}.multipathway_blocks.{m[2]}.res_blocks.{m[3]}.{_PYSF_RES[m[4]]}.{m[5]}"
    raise StadError(f"unexpected key {key!r} for a PySlowFast SlowFast")


def pytorchvideo_to_pyslowfast_key(key: str) -> str:
    """Our key -> PySlowFast's."""
    if m := _PV_STEM.match(key):
        return f"s1.pathway{m[1]}_stem.{'conv' if m[2] == 'conv' else 'bn'}.{m[3]}"
    if m := _PV_FUSE.match(key):
        return f"s{int(m[1]) + 1}_fuse.{'conv_f2s' if m[2] == 'conv_fast_to_slow' else 'bn'}.{m[3]}"
    if m := _PV_RES.match(key):
        return f"s{int(m[1]) + 1}.pathway{m[2]}_res{m[3]}.{_PV_TO_PYSF_RES[m[4]]}.{m[5]}"
    raise StadError(f"key {key!r} is not a pytorchvideo SlowFast trunk key")


def _has_lateral_norm(keys: Any) -> bool:
    return any(".multipathway_fusion.norm." in key for key in keys)


def to_acar_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`SlowFast` state dict (ours) in ACAR-Net's layout (the laterals' layout follows the model)."""
    lateral_norm = _has_lateral_norm(state_dict)
    return {pytorchvideo_to_acar_key(key, lateral_norm=lateral_norm): value for key, value in state_dict.items()}


def to_pyslowfast_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A :class:`SlowFast` state dict (ours) in PySlowFast's layout."""
    return {pytorchvideo_to_pyslowfast_key(key): value for key, value in state_dict.items()}


def save_acar_state_dict(model: nn.Module, path: str | Path) -> None:
    """``torch.save`` the model's state dict in ACAR-Net's layout (a flat dict, as ACAR's pretrained files)."""
    torch.save(to_acar_state_dict(model.state_dict()), Path(path))


# --------------------------------------------------------------------------------------------------------------
# Loading.

_NESTING_KEYS = ("state_dict", "model_state", "model")
_BACKBONE_PREFIXES = ("module.backbone.module.", "module.backbone.", "backbone.module.", "backbone.")


def _read(state: Mapping[str, Any] | str | Path) -> tuple[Mapping[str, Any], str | None]:
    """The object of a weights file (``weights_only=True``: a file never runs code), or ``state`` itself."""
    if not isinstance(state, (str, Path)):
        return state, None
    path = Path(state)
    obj = safe_torch_load(path, what="SlowFast weights")
    if not isinstance(obj, Mapping):
        raise StadError(f"{path}: expected a state dict, got {type(obj).__name__}")
    return obj, str(path)


def _unwrap(obj: Mapping[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Strip the nesting (``state_dict`` / ``model_state`` / ``model``) and wrapper prefixes of a checkpoint."""
    while True:
        inner = next((obj[k] for k in _NESTING_KEYS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    bad = [key for key, value in obj.items() if not isinstance(value, torch.Tensor)]
    if bad:
        raise StadError(f"{source}: expected a state dict of tensors; entries {bad[:4]} are not tensors")
    for prefix in _BACKBONE_PREFIXES:  # a detector's checkpoint: keep its backbone
        if any(key.startswith(prefix) for key in obj):
            obj = {key[len(prefix):]: value for key, value in obj.items() if key.startswith(prefix)}
            break
    return {key[len("module."):] if key.startswith("module.") else key: value for key, value in obj.items()}


def _listing(keys: list[str]) -> str:
    return f"{keys[:6]}{f' ... ({len(keys)} in all)' if len(keys) > 6 else ''}"


def _load_mapped(
    model: nn.Module,
    state: Mapping[str, Any] | str | Path,
    *,
    layout: str,
    to_ours: Callable[[str], str],
    to_theirs: Callable[[str], str],
    skip: tuple[str, ...] = (),
    source: str | None,
) -> None:
    obj, path = _read(state)
    source = path or source or f"{layout} state dict"
    theirs = {key: value for key, value in _unwrap(obj, source).items() if not key.startswith(skip)}
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unexpected: list[str] = []
    for key, value in theirs.items():
        try:
            ours = to_ours(key)
        except StadError:
            ours = None
        if ours is None or ours not in own:
            unexpected.append(key)
            continue
        if ours in mapped:
            raise StadError(f"{source}: keys {origin[ours]!r} and {key!r} both map to {ours!r}")
        mapped[ours], origin[ours] = value, key
    if not any(key.endswith(".num_batches_tracked") for key in theirs):
        # Files converted from Caffe2 carry no BatchNorm counters: keep the model's.
        mapped.update({key: value for key, value in own.items() if key.endswith(".num_batches_tracked")})
    missing = sorted(to_theirs(key) for key in own if key not in mapped)
    if missing or unexpected:
        raise StadError(
            f"{source} does not fit the SlowFast backbone ({layout} layout): missing keys {_listing(missing)}; "
            f"unexpected keys {_listing(sorted(unexpected))}"
        )
    mismatched = [
        f"{origin[key]}: file {tuple(value.shape)} vs model {tuple(own[key].shape)}"
        for key, value in mapped.items()
        if value.shape != own[key].shape
    ]
    if mismatched:
        raise StadError(f"{source} does not fit the SlowFast backbone: shape mismatches {_listing(mismatched)}")
    model.load_state_dict(mapped, strict=True)


def load_acar_state_dict(
    model: nn.Module, state: Mapping[str, Any] | str | Path, *, source: str | None = None
) -> None:
    """Load ACAR-Net / FBIL SlowFast weights (a flat backbone state dict such as ``SLOWFAST_R101_K700.pth.tar``, or
    a training checkpoint ``{"state_dict": {"module.backbone.module.*": ...}}``) strictly into ``model``.

    Args:
        model: a :class:`SlowFast` of the matching configuration (e.g. :func:`slowfast_r101_acar`).
        state: the state dict or checkpoint dict, or the path of a ``torch.save`` file (read with
            ``weights_only=True``).
        source: name used in error messages (default: the path, else ``"ACAR state dict"``).

    Raises:
        FileNotFoundError: ``state`` is a path that does not exist.
        StadError: a file that needs code to unpickle; missing / unexpected keys (named in ACAR's layout) or
            shape mismatches.
    """
    lateral_norm = _has_lateral_norm(model.state_dict())
    _load_mapped(
        model, state, layout="ACAR-Net", to_ours=acar_to_pytorchvideo_key,
        to_theirs=lambda key: pytorchvideo_to_acar_key(key, lateral_norm=lateral_norm), source=source,
    )


def load_pyslowfast_state_dict(
    model: nn.Module, state: Mapping[str, Any] | str | Path, *, source: str | None = None
) -> None:
    """Load PySlowFast SlowFast weights (``{"model_state": {...}}`` or a flat state dict) strictly into ``model``;
    the classification head ``head.*`` is skipped.

    Args:
        model: a :class:`SlowFast` of the matching configuration (PySlowFast: ``lateral="conv_bn_relu"``,
            ``lateral_kernel=7``, ``slow_full_span=True``).
        state: the state dict or checkpoint dict, or the path of a ``torch.save`` file (read with
            ``weights_only=True``).
        source: name used in error messages (default: the path, else ``"PySlowFast state dict"``).

    Raises:
        FileNotFoundError: ``state`` is a path that does not exist.
        StadError: a file that needs code to unpickle; missing / unexpected keys (named in PySlowFast's layout) or
            shape mismatches.
    """
    _load_mapped(
        model, state, layout="PySlowFast", to_ours=pyslowfast_to_pytorchvideo_key,
        to_theirs=pytorchvideo_to_pyslowfast_key, skip=("head.",), source=source,
    )
