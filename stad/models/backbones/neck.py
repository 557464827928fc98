"""CenterNet-style necks that bring backbone maps to one stride-4 map, with optional modulated deformable convs.

* :class:`ModulatedDeformConv2d`: DCNv2 (Zhu et al., CVPR 2019) on ``torchvision.ops.DeformConv2d`` with an
  offset+mask convolution, as the ``DCN`` layers of CenterNet / MOC-Detector are laid out.
* :class:`DeconvNeck`: the CenterNet ResNet neck (Xiao et al. "Simple Baselines"): 3 stages of
  ``3x3 conv (DCN) -> BN -> ReLU -> 4x4 stride-2 transposed conv -> BN -> ReLU`` (256, 128, 64 channels).
* :class:`DLAUpNeck`: the CenterNet DLA-34 neck: DLA-Up (iterative deep aggregation over levels 2..5)
  followed by IDA-Up over its three finest outputs, 64 channels at stride 4.

Layouts read from MOC-Detector's published ``src/network/{deconv,dla}.py``; the code here is written anew.

Offset channel order (checked in tests/models/test_backbones.py against a plain bilinear-sampling reference):
the offset-mask conv outputs ``3 * k*k`` channels split as ``o1, o2, mask``; ``offset = cat(o1, o2)`` and
``mask = sigmoid(mask)``. Both DCNv2 and ``torchvision.ops.deform_conv2d`` read the offset tensor
``(N, 2*k*k, H, W)`` interleaved per kernel tap: channel ``2*t`` is the y (row) shift and ``2*t + 1`` the
x (column) shift of tap ``t = i*k + j`` (row-major over the kernel). So ``cat(o1, o2)`` is passed unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torchvision.ops import DeformConv2d, deform_conv2d


class ModulatedDeformConv2d(nn.Module):
    """Modulated deformable convolution (DCNv2) whose offsets and mask come from a plain conv of the input.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size ``k`` (default 3).
        stride: stride (default 1).
        padding: zero padding (default 1).
        bias: add a learned bias (default True, as CenterNet's DCN).

    Shapes: ``(N, in_channels, H, W) -> (N, out_channels, H', W')``. The offset-mask conv starts at zero, so a
    fresh layer equals a plain convolution (offsets 0, mask 0.5 everywhere).
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, *, stride: int = 1, padding: int = 1, bias: bool = True
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.conv = DeformConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
        self.offset_mask = nn.Conv2d(in_channels, 3 * kernel_size * kernel_size, kernel_size, stride=stride, padding=padding, bias=True)
        nn.init.zeros_(self.offset_mask.weight)
        nn.init.zeros_(self.offset_mask.bias)

    def offsets_and_mask(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns ``offset (N, 2*k*k, H', W')`` (y, x interleaved per tap) and ``mask (N, k*k, H', W')`` in (0, 1)."""
        o1, o2, mask = torch.chunk(self.offset_mask(x), 3, dim=1)  # 3 x [N, k*k, H', W']
        return torch.cat((o1, o2), dim=1), torch.sigmoid(mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset, mask = self.offsets_and_mask(x)
        if x.dtype == torch.float32 and not torch.is_autocast_enabled(x.device.type):
            return self.conv(x, offset, mask)
        # Mixed precision: torchvision's CPU kernel has no bfloat16/float16 version, so the deformable
        # sampling runs in float32 (as torchvision's own CUDA autocast rule does).
        with torch.autocast(device_type=x.device.type, enabled=False):
            bias = None if self.conv.bias is None else self.conv.bias.float()
            return deform_conv2d(
                x.float(), offset.float(), self.conv.weight.float(), bias,
                stride=self.conv.stride, padding=self.conv.padding, dilation=self.conv.dilation, mask=mask.float(),
            )


def _conv3x3(in_channels: int, out_channels: int, *, deformable: bool) -> nn.Module:
    if deformable:
        return ModulatedDeformConv2d(in_channels, out_channels, 3, padding=1)
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=True)


def bilinear_upsample_init_(up: nn.ConvTranspose2d) -> None:
    """Initialise a transposed conv as per-channel bilinear upsampling (the FCN kernel).

    Works for depth-wise (``groups == channels``) and dense layers (dense: channel ``c`` to ``c`` only).
    """
    weight = up.weight  # [C_in, C_out / groups, kh, kw]
    size = weight.shape[-1]
    factor = math.ceil(size / 2)
    center = (2 * factor - 1 - factor % 2) / (2.0 * factor)
    grid = torch.arange(size, dtype=torch.float64)
    row = 1 - torch.abs(grid / factor - center)  # [kw]
    kernel = (row[:, None] * row[None, :]).to(weight.dtype)  # [kh, kw]
    with torch.no_grad():
        weight.zero_()
        if weight.shape[1] == 1:
            weight[:, 0] = kernel
        else:
            for c in range(min(weight.shape[0], weight.shape[1])):
                weight[c, c] = kernel


class DeconvStage(nn.Module):
    """``conv3x3 (DCN or plain) -> BN -> ReLU -> ConvTranspose 4x4 stride 2 -> BN -> ReLU``; doubles H and W."""

    def __init__(self, in_channels: int, out_channels: int, *, deformable: bool) -> None:
        super().__init__()
        self.conv = _conv3x3(in_channels, out_channels, deformable=deformable)
        self.bn1 = nn.BatchNorm2d(out_channels, momentum=0.1)
        self.up = nn.ConvTranspose2d(out_channels, out_channels, 4, stride=2, padding=1, output_padding=0, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)
        bilinear_upsample_init_(self.up)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv(x)))
        return self.relu(self.bn2(self.up(x)))


class DeconvNeck(nn.Module):
    """CenterNet ResNet neck: stride 32 -> stride 4 with three :class:`DeconvStage` s.

    Args:
        in_channels: channels of the backbone's last map (512 for ResNet-18).
        filters: output channels of each stage (default ``(256, 128, 64)``).
        deformable: use :class:`ModulatedDeformConv2d` for the 3x3 convs (default True, MOC's "resnet_18").

    Shapes: ``[(N, in_channels, H/32, W/32)] -> (N, filters[-1], H/4, W/4)``.
    """

    def __init__(self, in_channels: int, *, filters: tuple[int, ...] = (256, 128, 64), deformable: bool = True) -> None:
        super().__init__()
        chans = [in_channels, *filters]
        self.stages = nn.ModuleList(DeconvStage(a, b, deformable=deformable) for a, b in zip(chans[:-1], chans[1:]))
        self.out_channels = filters[-1]
        self.stride = 32 // 2 ** len(filters)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = features[-1]
        for stage in self.stages:
            x = stage(x)
        return x


class ConvBNReLU(nn.Module):
    """``conv3x3 (DCN or plain) -> BN -> ReLU`` (CenterNet's ``DeformConv`` block)."""

    def __init__(self, in_channels: int, out_channels: int, *, deformable: bool) -> None:
        super().__init__()
        self.conv = _conv3x3(in_channels, out_channels, deformable=deformable)
        self.bn = nn.BatchNorm2d(out_channels, momentum=0.1)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


class IDAUp(nn.Module):
    """Iterative deep aggregation upwards.

    For maps ``x_0 .. x_{L-1}`` (``x_j`` coarser by ``up_factors[j]`` than ``x_0``)::

        y_0 = x_0
        y_j = node_j( up_j( proj_j(x_j) ) + y_{j-1} )      j = 1 .. L-1

    ``proj_j``: ConvBNReLU ``in_channels[j] -> out_channels``; ``up_j``: depth-wise transposed conv by
    ``up_factors[j]`` (bilinear init); ``node_j``: ConvBNReLU ``out_channels -> out_channels``.
    ``x_0`` must already have ``out_channels`` channels.

    Args:
        out_channels: channels of the aggregated maps.
        in_channels: channels of each input map.
        up_factors: upsampling factor of each input map (``up_factors[0]`` is 1).
        deformable: DCN 3x3 convs (default True).
    """

    def __init__(self, out_channels: int, in_channels: list[int], up_factors: list[int], *, deformable: bool = True) -> None:
        super().__init__()
        self.proj = nn.ModuleList(ConvBNReLU(c, out_channels, deformable=deformable) for c in in_channels[1:])
        self.up = nn.ModuleList()
        for f in up_factors[1:]:
            f = int(f)
            up = nn.ConvTranspose2d(out_channels, out_channels, 2 * f, stride=f, padding=f // 2, output_padding=0,
                                    groups=out_channels, bias=False)
            bilinear_upsample_init_(up)
            self.up.append(up)
        self.node = nn.ModuleList(ConvBNReLU(out_channels, out_channels, deformable=deformable) for _ in in_channels[1:])

    def forward(self, layers: list[torch.Tensor]) -> list[torch.Tensor]:
        """Returns the list ``[y_0, ..., y_{L-1}]`` (all at the resolution of ``x_0``)."""
        out = [layers[0]]
        for j in range(1, len(layers)):
            x = self.up[j - 1](self.proj[j - 1](layers[j]))
            out.append(self.node[j - 1](x + out[-1]))
        return out


class DLAUpNeck(nn.Module):
    """CenterNet DLA-34 neck: DLA-Up over levels 2..5, then IDA-Up of its three finest outputs.

    Flow (channels 64/128/256/512 at strides 4/8/16/32)::

        [l2, l3, l4, l5] --dla_up.0 on [l4,l5]--> l5' (256, s16)
                         --dla_up.1 on [l3,l4,l5']--> l4', l5'' (128, s8)
                         --dla_up.2 on [l2,l3,l4',l5'']--> ... l5''' (64, s4)
        ida_up on [l5''' (64, s4), l5'' (128, s8), l5' (256, s16)] -> last map (64, s4)

    Args:
        channels: channels of the backbone maps (default DLA-34 ``[64, 128, 256, 512]``).
        strides: strides of the backbone maps (default ``[4, 8, 16, 32]``).
        deformable: DCN 3x3 convs (default True, as MOC's ``dla_34``).

    Shapes: four maps -> ``(N, channels[0], H/strides[0], W/strides[0])``.
    """

    def __init__(self, channels: list[int] | None = None, strides: list[int] | None = None, *, deformable: bool = True) -> None:
        super().__init__()
        channels = list(channels or [64, 128, 256, 512])
        strides = list(strides or [4, 8, 16, 32])
        scales = [s // strides[0] for s in strides]
        in_channels = list(channels)
        self.dla_up = nn.ModuleList()
        for i in range(len(channels) - 1):
            j = len(channels) - 2 - i  # aggregate levels j .. end into level j's resolution
            self.dla_up.append(
                IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]], deformable=deformable)
            )
            scales[j + 1:] = [scales[j]] * (len(scales) - j - 1)
            in_channels[j + 1:] = [channels[j]] * (len(channels) - j - 1)
        last = len(channels) - 1  # the final IDA-Up takes the first `last` DLA-Up outputs
        self.ida_up = IDAUp(channels[0], channels[:last], [2**i for i in range(last)], deformable=deformable)
        self.out_channels = channels[0]
        self.stride = strides[0]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        layers = list(features)
        outs = [layers[-1]]
        for i, ida in enumerate(self.dla_up):
            start = len(layers) - 2 - i
            layers[start:] = ida(layers[start:])
            outs.insert(0, layers[-1])
        return self.ida_up(outs[: len(self.ida_up.proj) + 1])[-1]
