"""Late fusion of an RGB and a flow tubelet detector (MOC's two-stream inference, Li et al., ECCV 2020).

MOC-Detector (``src/detector/normal_moc_det.py``, ``process``; weights in ``src/opts.py``) runs the two
streams separately and fuses their head outputs before decoding:

    rgb frames (T, 3, H, W)      ──rgb.frame_features──▶  (T, C1, h, w) ┐
    flow stacks (T, 3F, H, W)    ──flow.frame_features─▶  (T, C2, h, w) ┘ concatenated: (T, C1 + C2, h, w)
    window (B, K, C1 + C2, h, w) ──split──▶ each stream's head ──▶ heat = sigmoid(center), movement, wh
        (flip test per stream: heat and wh averaged with the mirrored-back flipped prediction, movement unflipped)
    fused = w * rgb + (1 - w) * flow, per output, with w_heat = 0.5, w_movement = 0.8, w_wh = 0.8 (MOC's
        ``hm_fusion_rgb``, ``mov_fusion_rgb``, ``wh_fusion_rgb`` defaults)
    ──decode_moc + to_tubelets──▶ list[Tubelets]

:class:`TwoStreamDetector` exposes ``K``, ``frame_features`` and ``detect_from_features`` like
:class:`stad.models.moc.MOCDetector`, so :mod:`stad.engine.families.tubelet` (per-frame feature reuse, flip test) runs
it unchanged; its input frames are the RGB channels followed by the flow channels
(:mod:`stad.data.streams`, stream ``"fused"``). Each stream model needs ``K``, ``num_classes``, ``stride``,
``top_n``, ``frame_features``, ``neck.out_channels`` and ``head(features (B, K, C, h, w)) -> MOCOutputs``
(or ``outputs_from_features`` with that signature, for detectors that transform features before the head).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from stad.errors import StadError
from stad.models.decode import decode_moc, to_tubelets
from stad.models.heads.moc import MOCOutputs
from stad.structures import Tubelets


@dataclass(frozen=True)
class FusionWeights:
    """RGB weight of each fused output (the flow stream gets ``1 - w``); defaults are MOC's."""

    heatmap: float = 0.5
    movement: float = 0.8
    wh: float = 0.8

    def __post_init__(self) -> None:
        for name in ("heatmap", "movement", "wh"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise StadError(f"fusion weight {name}={value} outside [0, 1]")

    @classmethod
    def uniform(cls, weight: float) -> FusionWeights:
        """The same RGB weight for the three outputs (1.0: RGB alone, 0.0: flow alone)."""
        return cls(heatmap=weight, movement=weight, wh=weight)


@dataclass
class StreamMaps:
    """One stream's decoded-ready maps for ``B`` windows.

    Attributes:
        heat: ``(B, C, h, w)`` center probabilities (after sigmoid).
        movement: ``(B, 2K, h, w)``.
        wh: ``(B, 2K, h, w)``.
    """

    heat: torch.Tensor
    movement: torch.Tensor
    wh: torch.Tensor


def _outputs(model: nn.Module, features: torch.Tensor) -> MOCOutputs:
    """Head outputs of per-frame window features ``(B, K, C, h, w)``: ``model.outputs_from_features`` when the
    model defines it (e.g. STADO: attention, then the head), else ``model.head`` for a plain MOC."""
    from stad.models.moc import MOCDetector

    from_features = getattr(model, "outputs_from_features", None)
    if from_features is not None:
        return from_features(features)
    if type(model).detect_from_features is not MOCDetector.detect_from_features:
        # the model does more than `head` between features and decoding; fusing `head` alone would be wrong
        raise StadError(
            f"{type(model).__name__} changes detect_from_features but has no outputs_from_features(features) -> MOCOutputs; "
            "it cannot be fused"
        )
    return model.head(features)


def stream_maps(model: nn.Module, features: torch.Tensor, flip_features: torch.Tensor | None = None) -> StreamMaps:
    """Heat (sigmoid), movement and size of ``model`` on ``features`` ``(B, K, C, h, w)``; with ``flip_features``
    heat and size are averaged with the mirrored-back flipped prediction (MOC's ``--flip_test``)."""
    out = _outputs(model, features)
    heat, wh = torch.sigmoid(out.heatmap.float()), out.wh.float()
    if flip_features is not None:
        flipped = _outputs(model, flip_features)
        heat = (heat + torch.sigmoid(flipped.heatmap.float()).flip(-1)) / 2
        wh = (wh + flipped.wh.float().flip(-1)) / 2
    return StreamMaps(heat=heat, movement=out.movement.float(), wh=wh)


def fuse_maps(rgb: StreamMaps, flow: StreamMaps, weights: FusionWeights) -> StreamMaps:
    """``w * rgb + (1 - w) * flow`` for heat, movement and size (MOC's rule)."""
    return StreamMaps(
        heat=weights.heatmap * rgb.heat + (1 - weights.heatmap) * flow.heat,
        movement=weights.movement * rgb.movement + (1 - weights.movement) * flow.movement,
        wh=weights.wh * rgb.wh + (1 - weights.wh) * flow.wh,
    )


class TwoStreamDetector(nn.Module):
    """RGB + flow tubelet detector with MOC's late fusion (module docstring).

    Args:
        rgb: the RGB detector (3 input channels).
        flow: the flow detector (``flow_channels`` input channels, e.g. 15 for 5 stacked flow images).
        flow_channels: input channels of ``flow``.
        weights: RGB weights of the fused outputs (default MOC's 0.5 / 0.8 / 0.8).
    """

    def __init__(self, *, rgb: nn.Module, flow: nn.Module, flow_channels: int, weights: FusionWeights | None = None) -> None:
        super().__init__()
        for attr in ("K", "num_classes", "stride"):
            if getattr(rgb, attr) != getattr(flow, attr):
                raise StadError(f"the RGB and flow detectors differ in {attr}: {getattr(rgb, attr)} vs {getattr(flow, attr)}")
        self.rgb = rgb
        self.flow = flow
        self.K = int(rgb.K)
        self.num_classes = int(rgb.num_classes)
        self.stride = int(rgb.stride)
        self.top_n = int(rgb.top_n)
        self.rgb_channels = 3
        self.flow_channels = int(flow_channels)
        self.rgb_feature_channels = int(rgb.neck.out_channels)
        self.weights = weights or FusionWeights()

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` ``(T, 3 + flow_channels, H, W)`` (rgb then flow) -> ``(T, C1 + C2, h, w)``."""
        expected = self.rgb_channels + self.flow_channels
        if frames.dim() != 4 or frames.shape[1] != expected:
            raise ValueError(f"frames must have shape (T, {expected}, H, W) (rgb then flow channels), got {tuple(frames.shape)}")
        rgb = self.rgb.frame_features(frames[:, : self.rgb_channels])  # [T, C1, h, w]
        flow = self.flow.frame_features(frames[:, self.rgb_channels :])  # [T, C2, h, w]
        if rgb.shape[-2:] != flow.shape[-2:]:
            raise ValueError(f"the streams' feature maps differ in size: {tuple(rgb.shape[-2:])} vs {tuple(flow.shape[-2:])}")
        return torch.cat([rgb, flow], dim=1)

    def _split(self, features: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if features is None:
            return None, None
        c = self.rgb_feature_channels
        return features[:, :, :c], features[:, :, c:]  # [B, K, C1, h, w], [B, K, C2, h, w]

    def fused_maps(self, features: torch.Tensor, flip_features: torch.Tensor | None = None) -> StreamMaps:
        """Fused maps of windows ``features`` ``(B, K, C1 + C2, h, w)``."""
        rgb_f, flow_f = self._split(features)
        rgb_flip, flow_flip = self._split(flip_features)
        return fuse_maps(stream_maps(self.rgb, rgb_f, rgb_flip), stream_maps(self.flow, flow_f, flow_flip), self.weights)

    @torch.no_grad()
    def detect_from_features(
        self, features: torch.Tensor, metas: Sequence | None = None, flip_features: torch.Tensor | None = None
    ) -> list[Tubelets]:
        """Tubelets of ``B`` windows from concatenated per-frame features ``(B, K, C1 + C2, h, w)``.

        Args:
            features: windows of :meth:`frame_features` outputs.
            metas: one :class:`stad.models.moc.ClipMeta` per window (default: start 1, input pixels).
            flip_features: the same for the mirrored frames (flow x channel inverted), or None.

        Returns:
            ``B`` :class:`Tubelets` with ``top_n`` rows, boxes ``(N, K, 4)`` in original pixels.
        """
        from stad.models.moc import ClipMeta

        B = features.shape[0]  # noqa: N806
        metas = list(metas) if metas is not None else [ClipMeta() for _ in range(B)]
        if len(metas) != B:
            raise ValueError(f"got {len(metas)} clip metas for {B} clips")
        maps = self.fused_maps(features, flip_features)
        decoded = decode_moc(maps.heat, maps.movement, maps.wh, top_n=self.top_n)
        return to_tubelets(
            decoded,
            starts=[m.start for m in metas],
            original_sizes=[m.orig_size for m in metas],
            affines=[m.affine for m in metas],
            stride=self.stride,
        )
