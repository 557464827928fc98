"""The KORSAL key-point detector: CenterNet on RGB plus a cheap temporal cue, one frame at a time.

"Key-point Detection based Online Real-Time Spatio-Temporal Action Localization" (KORSAL, Abeywardena et al.)
detects actors as centre points (CenterNet, Zhou et al. "Objects as Points", 2019) on the current RGB frame
concatenated with a structural-similarity (SSIM) map between the current and an earlier frame. Flow for ``B``
frames ``(B, 3, H, W)`` (ImageNet-normalised) and their earlier frames ``t - gap``::

    image, previous ──TemporalCue (on the device: kornia SSIM map / |difference| / previous RGB / nothing)──▶ cue
    cat(image, cue) (B, 3 + c, H, W) ──backbone (timm ResNet-18 / DLA-34)──▶ maps ──neck──▶ (B, 64, H/4, W/4)
        ──KeypointHead──▶ hm (B, C, h, w), wh (B, 2, h, w), reg (B, 2, h, w)
    training : build_moc_targets with K = 1 + moc_losses (focal + L1)   ──▶ {"loss", "loss_hm", "loss_wh", "loss_reg"}
    inference: decode_moc with K = 1 (peaks, top-N) + to_tubelets       ──▶ list[FrameBoxes], original pixels

With one frame, MOC's targets, losses and decoding are exactly CenterNet's: MOC's "movement" of the middle frame
is CenterNet's sub-pixel offset ``reg`` and its per-frame size is ``wh``; so they are reused, not rewritten.

Batch keys (from ``stad.data.datasets.FrameDataset`` / ``collate_frames``): ``"image"`` and ``"previous"``
``(B, 3, H, W)`` float (normalised), ``"boxes"`` ``(B, N, 4)`` float input pixels ``x1, y1, x2, y2``,
``"labels"`` ``(B, N)`` long, ``"mask"`` ``(B, N)`` bool; for :meth:`KeypointDetector.detect` also
``"orig_size"`` ``(B, 2)`` and optionally ``"affine"`` ``(B, 4)``.

Weights: :func:`load_centernet_weights` reads the original CenterNet key layout (``ctdet_coco_resdcn18.pth``,
``ctdet_coco_dla_2x.pth``: body and neck through :func:`stad.models.checkpoints.map_centernet_coco_state_dict`,
heads ``hm``/``wh``/``reg`` by name); the first convolution's extra cue channels are initialised from the RGB
kernel's mean (``cue_init="mean"``) or zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stad.data.datasets import IMAGENET_MEAN, IMAGENET_STD
from stad.errors import StadError
from stad.models.backbones import DeconvNeck, DLAUpNeck, dla34, resnet18
from stad.models.checkpoints import load_state_dict_strict, map_centernet_coco_state_dict, read_weights_file
from stad.models.decode import decode_moc, to_tubelets
from stad.models.heads.moc import HEATMAP_BIAS_INIT, MOCOutputs, _branch
from stad.models.losses import moc_losses
from stad.models.matching import build_moc_targets

CUES = ("ssim", "diff", "prev", "none")
CUE_CHANNELS = {"ssim": 1, "diff": 1, "prev": 3, "none": 0}
VALID_KEYS = ("mask", "valid", "box_mask")


class TemporalCue(nn.Module):
    """The temporal input channels computed from the current and an earlier frame, on their device.

    Args:
        kind: ``"ssim"`` (SSIM map of the grayscale frames, kornia's definition, :func:`ssim_map`; 1 channel in [-1, 1]), ``"diff"``
            (absolute difference of the grayscale frames in [0, 1], 1 channel), ``"prev"`` (the earlier
            frame, normalised RGB, 3 channels) or ``"none"`` (0 channels).
        window: SSIM Gaussian window size (odd, default 7).
        mean, std: the normalisation of the inputs (undone before SSIM / difference).

    Shapes: ``image``, ``previous`` ``(B, 3, H, W)`` normalised -> ``(B, channels, H, W)``.
    """

    def __init__(
        self, kind: str = "ssim", *, window: int = 7, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
    ) -> None:
        super().__init__()
        if kind not in CUES:
            raise StadError(f"temporal cue must be one of {list(CUES)}, got {kind!r}")
        if window < 3 or window % 2 == 0:
            raise StadError(f"SSIM window must be an odd size >= 3, got {window}")
        self.kind = kind
        self.window = int(window)
        self.channels = CUE_CHANNELS[kind]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def _gray(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised ``(B, 3, H, W)`` -> grayscale ``(B, 1, H, W)`` in [0, 1]."""
        from kornia.color import rgb_to_grayscale

        return rgb_to_grayscale((x.float() * self.std + self.mean).clamp(0, 1))

    def forward(self, image: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        if image.shape != previous.shape or image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"image and previous must both be (B, 3, H, W), got {tuple(image.shape)} and {tuple(previous.shape)}")
        if self.kind == "none":
            return image.new_zeros((image.shape[0], 0, *image.shape[2:]))
        if self.kind == "prev":
            return previous
        current, earlier = self._gray(image), self._gray(previous)  # [B, 1, H, W] each
        if self.kind == "diff":
            return (current - earlier).abs().to(image.dtype)
        return ssim_map(current, earlier, self.window).to(image.dtype)  # [B, 1, H, W]


def ssim_map(x: torch.Tensor, y: torch.Tensor, window: int) -> torch.Tensor:
    """SSIM map of two ``(B, 1, H, W)`` images in [0, 1]: ``kornia.metrics.ssim(x, y, window, max_val=1, eps=0)``.

    The same definition (Gaussian window of sigma 1.5 from kornia, reflect padding, C1 = 0.01^2, C2 = 0.03^2),
    computed with the five local moments in one grouped separable convolution, in float32: about 3x faster than
    kornia's on the CPU at 128x160 (1.7 vs 5.2 ms, one thread), which matters in the real-time stream.
    """
    from kornia.filters import get_gaussian_kernel1d

    x, y = x.float(), y.float()
    g = get_gaussian_kernel1d(window, 1.5, device=x.device, dtype=torch.float32).view(-1)  # [window]
    pad = window // 2
    moments = torch.cat([x, y, x * x, y * y, x * y], dim=1)  # [B, 5, H, W]
    moments = F.pad(moments, (pad, pad, pad, pad), mode="reflect")
    moments = F.conv2d(moments, g.view(1, 1, 1, -1).expand(5, 1, 1, window), groups=5)  # along x
    moments = F.conv2d(moments, g.view(1, 1, -1, 1).expand(5, 1, window, 1), groups=5)  # along y
    mu_x, mu_y, xx, yy, xy = moments.unbind(1)  # [B, H, W] each
    c1, c2 = 0.01**2, 0.03**2
    var_x, var_y, cov = xx - mu_x * mu_x, yy - mu_y * mu_y, xy - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    return (num / den).unsqueeze(1)  # [B, 1, H, W]


@dataclass
class KeypointOutputs:
    """Raw head outputs on an ``h x w`` stride-4 grid.

    Attributes:
        heatmap: ``(B, C, h, w)`` centre logits (before sigmoid).
        wh: ``(B, 2, h, w)`` box width and height (grid units), read at the centre.
        reg: ``(B, 2, h, w)`` sub-pixel offset ``dx, dy`` of the centre from the grid location.
    """

    heatmap: torch.Tensor
    wh: torch.Tensor
    reg: torch.Tensor

    def as_moc(self) -> MOCOutputs:
        """The same tensors as one-frame MOC outputs (movement = reg), for MOC's losses and decoding."""
        return MOCOutputs(heatmap=self.heatmap, movement=self.reg, wh=self.wh)


class KeypointHead(nn.Module):
    """CenterNet's three heads ``hm``, ``wh``, ``reg``: each ``conv3x3 -> ReLU -> conv1x1``.

    Args:
        in_channels: channels of the stride-4 features (64).
        num_classes: action classes (no background).
        head_conv: hidden channels of each head (CenterNet: 64 for ResNet, 256 for DLA).

    Parameter names follow CenterNet's (``hm.0``, ``hm.2``, ``wh.*``, ``reg.*``), so its files load by name.
    """

    def __init__(self, *, in_channels: int, num_classes: int, head_conv: int = 64) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.hm = _branch(in_channels, head_conv, num_classes)
        nn.init.constant_(self.hm[2].bias, HEATMAP_BIAS_INIT)
        self.wh = _branch(in_channels, head_conv, 2)
        self.reg = _branch(in_channels, head_conv, 2)

    def forward(self, features: torch.Tensor) -> KeypointOutputs:
        """``features`` ``(B, C_in, h, w)`` -> :class:`KeypointOutputs`."""
        return KeypointOutputs(heatmap=self.hm(features), wh=self.wh(features), reg=self.reg(features))


@dataclass
class FrameBoxes:
    """Detections of one frame (``N`` rows, by decreasing score).

    Attributes:
        boxes: ``(N, 4)`` float64 ``x1, y1, x2, y2`` in original video pixels (clipped to the frame).
        scores: ``(N,)`` float64 centre heat-map probability.
        labels: ``(N,)`` int64 0-based class.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray


class KeypointDetector(nn.Module):
    """CenterNet-style per-frame action detector with a temporal-cue input (KORSAL).

    Args:
        backbone: module with ``forward_features(x (N, 3 + c, H, W)) -> list[Tensor]`` and ``in_chans = 3 + c``.
        neck: maps the backbone's list to ``(N, C, H/4, W/4)``; has ``out_channels`` and ``stride``.
        head: :class:`KeypointHead`.
        cue: :class:`TemporalCue` (its ``channels`` must match the backbone's extra input channels).
        num_classes: number of action classes.
        gap: distance (frames) from the current to the earlier frame of the cue (default 1).
        # losses (CenterNet: 1, 0.1, 1)
        hm_weight, wh_weight, reg_weight: loss weights.
        # inference
        top_n: detections kept per frame (default 100).
    """

    def __init__(
        self,
        *,
        backbone: nn.Module,
        neck: nn.Module,
        head: KeypointHead,
        cue: TemporalCue,
        num_classes: int,
        gap: int = 1,
        hm_weight: float = 1.0,
        wh_weight: float = 0.1,
        reg_weight: float = 1.0,
        top_n: int = 100,
    ) -> None:
        super().__init__()
        if head.num_classes != num_classes:
            raise ValueError(f"head built for {head.num_classes} classes, detector has {num_classes}")
        if gap < 1:
            raise ValueError(f"gap must be >= 1, got {gap}")
        self.backbone = backbone
        self.neck = neck
        self.head = head
        self.cue = cue
        self.num_classes = num_classes
        self.gap = int(gap)
        self.stride = int(getattr(neck, "stride", 4))
        self.loss_weights = {"hm_weight": hm_weight, "mov_weight": reg_weight, "wh_weight": wh_weight}
        self.top_n = top_n

    @property
    def in_chans(self) -> int:
        """Network input channels: 3 (RGB) plus the cue's."""
        return 3 + self.cue.channels

    # -- shared path ---------------------------------------------------------------------------------
    def network_input(self, image: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """``image``, ``previous`` ``(B, 3, H, W)`` -> ``(B, 3 + c, H, W)`` = ``cat(image, cue)``."""
        cue = self.cue(image, previous)
        return torch.cat((image, cue), dim=1) if cue.shape[1] else image

    def head_outputs(self, x: torch.Tensor) -> KeypointOutputs:
        """Network input ``(B, 3 + c, H, W)`` -> :class:`KeypointOutputs` on the stride-4 grid."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"network input must be (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        return self.head(self.neck(self.backbone.forward_features(x)))

    # -- training ------------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Losses: ``{"loss": weighted total, "loss_hm", "loss_wh", "loss_reg"}``."""
        image = batch["image"]
        valid = next((batch[k] for k in VALID_KEYS if k in batch), None)
        if valid is None:
            raise StadError(f"batch has none of {list(VALID_KEYS)} to mark real actors (keys: {sorted(batch)})")
        outputs = self.head_outputs(self.network_input(image, batch["previous"]))
        boxes = batch["boxes"]
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise StadError(f"batch 'boxes' must have shape (B, N, 4), got {tuple(boxes.shape)}")
        targets = build_moc_targets(
            boxes=boxes[:, :, None, :],  # [B, N, 1, 4]: one-frame tubelets
            labels=batch["labels"].clamp(min=0),  # padded -1 slots are masked out by `valid`
            valid=valid,
            num_classes=self.num_classes,
            input_size=(image.shape[-2], image.shape[-1]),
            output_size=(outputs.heatmap.shape[-2], outputs.heatmap.shape[-1]),
        )
        losses = moc_losses(outputs.as_moc(), targets, **self.loss_weights)
        return {"loss": losses["loss"], "loss_hm": losses["loss_hm"], "loss_wh": losses["loss_wh"], "loss_reg": losses["loss_mov"]}

    # -- inference -----------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(
        self,
        outputs: KeypointOutputs,
        *,
        orig_sizes: Sequence[tuple[int, int] | None],
        affines: Sequence[tuple[float, float, float, float] | None] | None = None,
    ) -> list[FrameBoxes]:
        """Top-``top_n`` peaks per frame -> :class:`FrameBoxes` in original pixels (``None`` size: input pixels)."""
        heat = torch.sigmoid(outputs.heatmap.float())  # [B, C, h, w]
        decoded = decode_moc(heat, outputs.reg, outputs.wh, top_n=self.top_n)  # boxes [B, n, 1, 4]
        tubelets = to_tubelets(
            decoded, starts=[1] * len(orig_sizes), original_sizes=list(orig_sizes),
            affines=list(affines) if affines is not None else None, stride=self.stride,
        )
        return [FrameBoxes(boxes=t.boxes[:, 0, :], scores=t.score, labels=t.label) for t in tubelets]

    @torch.no_grad()
    def detect_frames(
        self, image: torch.Tensor, previous: torch.Tensor, *, orig_sizes: Sequence[tuple[int, int] | None] | None = None
    ) -> list[FrameBoxes]:
        """Detections of ``B`` frames ``(B, 3, H, W)`` with their earlier frames; call ``model.eval()`` first."""
        outputs = self.head_outputs(self.network_input(image, previous))
        return self.decode(outputs, orig_sizes=orig_sizes if orig_sizes is not None else [None] * image.shape[0])

    @torch.no_grad()
    def detect(self, batch: Mapping[str, Any]) -> list[FrameBoxes]:
        """Detections of a collated :class:`~stad.data.datasets.FrameDataset` batch (``orig_size``, ``affine`` used)."""
        outputs = self.head_outputs(self.network_input(batch["image"], batch["previous"]))
        sizes = [tuple(int(v) for v in hw) for hw in torch.as_tensor(batch["orig_size"]).reshape(-1, 2).tolist()]
        affines = [tuple(a) for a in torch.as_tensor(batch["affine"]).reshape(-1, 4).tolist()] if "affine" in batch else None
        return self.decode(outputs, orig_sizes=sizes, affines=affines)


# ---------------------------------------------------------------------------------------------------
# Original CenterNet weights

CENTERNET_HEADS = ("hm.", "wh.", "reg.")
_FIRST_CONV = {"resnet18": "backbone.body.conv1.weight", "dla34": "backbone.body.base_layer.0.weight"}


def map_centernet_state_dict(state_dict: Mapping[str, torch.Tensor], *, backbone: str = "resnet18") -> dict[str, torch.Tensor]:
    """CenterNet ``ctdet`` keys -> :class:`KeypointDetector` keys.

    Body and neck go through :func:`stad.models.checkpoints.map_centernet_coco_state_dict` (MOC's mapping of the
    same files); ``hm.*``, ``wh.*``, ``reg.*`` become ``head.hm.*``, ``head.wh.*``, ``head.reg.*``.
    """
    if backbone not in _FIRST_CONV:
        raise StadError(f"backbone must be one of {list(_FIRST_CONV)}, got {backbone!r}")
    heads, body = {}, {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        (heads if key.startswith(CENTERNET_HEADS) else body)[key] = value
    out = map_centernet_coco_state_dict(body, "resnet_18" if backbone == "resnet18" else "dla_34")
    out.update({"head." + k: v for k, v in heads.items()})
    return out


def load_centernet_weights(
    model: KeypointDetector,
    state_dict: Mapping[str, torch.Tensor],
    *,
    backbone: str = "resnet18",
    cue_init: Literal["mean", "zero"] = "mean",
    source: str = "CenterNet weights",
) -> list[str]:
    """Load a CenterNet ``ctdet`` state dict into ``model``.

    The first convolution's kernel ``(C0, 3, k, k)`` fills the RGB input channels; the cue channels get the mean
    of the RGB kernel over its input channels (``cue_init="mean"``) or zeros. A class heat-map head whose class
    count differs (COCO's 80) is left at its initial values.

    Returns:
        the model keys left at their initial values (the last ``hm`` layer when the class counts differ).

    Raises:
        StadError: missing / unexpected keys or shape mismatches, named (``load_state_dict_strict``).
    """
    if cue_init not in ("mean", "zero"):
        raise StadError(f"cue_init must be 'mean' or 'zero', got {cue_init!r}")
    mapped = map_centernet_state_dict(state_dict, backbone=backbone)
    own = model.state_dict()
    first = _FIRST_CONV[backbone]
    stem = mapped.get(first)
    if stem is not None and own[first].shape[1] != stem.shape[1]:
        if stem.shape[1] != 3:
            raise StadError(f"{source}: first conv {first} takes {stem.shape[1]} channels, expected 3 (RGB)")
        extra = own[first].shape[1] - 3
        fill = stem.mean(dim=1, keepdim=True) if cue_init == "mean" else torch.zeros_like(stem[:, :1])
        mapped[first] = torch.cat((stem, fill.expand(-1, extra, -1, -1)), dim=1).clone()
    left = []
    for key in ("head.hm.2.weight", "head.hm.2.bias"):
        if key in mapped and mapped[key].shape != own[key].shape:
            del mapped[key]
            left.append(key)
    load_state_dict_strict(model, {**{k: own[k] for k in left}, **mapped}, source=source)
    return left


def load_keypoint_weights(model: KeypointDetector, path: str | Path, *, backbone: str, cue_init: str = "mean") -> str:
    """Load a weights file: a stad checkpoint (``{"model": ...}``, strict) or a CenterNet ``ctdet`` file
    (``{"state_dict": ...}`` or a bare state dict, :func:`load_centernet_weights`). Returns ``"stad"`` or ``"centernet"``."""
    path = Path(path)
    obj = read_weights_file(model, path)
    if obj is None:
        return "stad"
    sd = obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise StadError(f"{path}: expected a stad checkpoint or a CenterNet state dict, got {type(obj).__name__}")
    load_centernet_weights(model, sd, backbone=backbone, cue_init=cue_init, source=str(path))  # type: ignore[arg-type]
    return "centernet"


# ---------------------------------------------------------------------------------------------------
# Builder

_OPTIONS: dict[str, Any] = {
    "cue": "ssim",
    "gap": 1,
    "ssim_window": 7,
    "head_conv": None,  # CenterNet: 64 for resnet18, 256 for dla34
    "deformable": True,
    "width": 1.0,
    "hm_weight": 1.0,
    "wh_weight": 0.1,
    "reg_weight": 1.0,
    "top_n": 100,
    "backbone_weights": None,
    "cue_init": "mean",
}
BACKBONES = ("resnet18", "dla34")


def build_keypoint(cfg: Any) -> KeypointDetector:
    """Build a :class:`KeypointDetector` from a ``ModelConfig``-like object.

    ``cfg`` needs ``backbone`` (``resnet18`` or ``dla34``), ``num_classes`` and ``options``; option keys
    (defaults): ``cue`` (``ssim``; ``diff``, ``prev``, ``none``), ``gap`` (1, frames between the current and the
    earlier frame), ``ssim_window`` (7), ``head_conv`` (64 for resnet18, 256 for dla34), ``deformable`` (True),
    ``width`` (1.0, ResNet-18 channel multiplier), ``hm_weight`` (1), ``wh_weight`` (0.1), ``reg_weight`` (1),
    ``top_n`` (100), ``backbone_weights`` (ImageNet file or None; the cue channels of the first conv get the
    RGB mean), ``cue_init`` (``mean`` or ``zero``, for CenterNet files). ``cfg.weights``: a stad checkpoint or a
    CenterNet ``ctdet`` file (:func:`load_keypoint_weights`).
    """
    options = dict(getattr(cfg, "options", None) or {})
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise StadError(f"unknown keypoint option(s) {unknown}; valid options: {sorted(_OPTIONS)}")
    opt = {**_OPTIONS, **options}
    name = cfg.backbone
    if name not in BACKBONES:
        raise StadError(f"keypoint backbone must be one of {list(BACKBONES)}, got {name!r}")
    num_classes = int(cfg.num_classes)
    if num_classes < 1:
        raise StadError(f"model.num_classes must be >= 1, got {num_classes}")
    cue = TemporalCue(str(opt["cue"]), window=int(opt["ssim_window"]))
    in_chans = 3 + cue.channels
    if name == "resnet18":
        width = float(opt["width"])
        backbone = resnet18(in_chans=in_chans, weights=opt["backbone_weights"], width=width)
        filters = tuple(max(8, int(round(c * width))) for c in (256, 128, 64))
        neck: nn.Module = DeconvNeck(backbone.channels[-1], filters=filters, deformable=bool(opt["deformable"]))
        head_conv = 64
    else:
        if float(opt["width"]) != 1.0:
            raise StadError("option 'width' applies to the resnet18 backbone only")
        backbone = dla34(in_chans=in_chans, weights=opt["backbone_weights"])
        neck = DLAUpNeck(backbone.channels, backbone.strides, deformable=bool(opt["deformable"]))
        head_conv = 256
    if opt["head_conv"] is not None:
        head_conv = int(opt["head_conv"])
    model = KeypointDetector(
        backbone=backbone,
        neck=neck,
        head=KeypointHead(in_channels=neck.out_channels, num_classes=num_classes, head_conv=head_conv),
        cue=cue,
        num_classes=num_classes,
        gap=int(opt["gap"]),
        hm_weight=float(opt["hm_weight"]),
        wh_weight=float(opt["wh_weight"]),
        reg_weight=float(opt["reg_weight"]),
        top_n=int(opt["top_n"]),
    )
    weights = getattr(cfg, "weights", None)
    if weights:
        load_keypoint_weights(model, weights, backbone=name, cue_init=str(opt["cue_init"]))
    return model


build = build_keypoint
