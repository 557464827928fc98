"""Loading the original MOC-Detector release checkpoints (Li et al., ECCV 2020) by key mapping.

A release file (``torch.save``) holds ``{"epoch", "state_dict", ...}`` whose keys follow MOC-Detector's
modules (``src/network/{moc_net,branch,resnet,deconv,dla}.py``; layout read from the published code):

=========================================================  ===============================================
MOC key                                                     stad key
=========================================================  ===============================================
``backbone.{conv1,bn1,layer1..4}.*`` (resnet_18)            ``backbone.body.*`` (timm ResNet, same names)
``backbone.deconv_layer.deconv_layers.{6s+0}.weight|bias``  ``neck.stages.{s}.conv.conv.weight|bias``
``backbone.deconv_layer.deconv_layers.{6s+0}.conv_offset_mask.*``  ``neck.stages.{s}.conv.offset_mask.*``
``backbone.deconv_layer.deconv_layers.{6s+1|6s+3|6s+4}.*``  ``neck.stages.{s}.bn1|up|bn2.*``
``backbone.base.*`` (dla_34)                                ``backbone.body.*`` (timm DLA, same names)
``backbone.dla_up.ida_{i}.{proj,up,node}_{j}.*``            ``neck.dla_up.{i}.{proj,up,node}.{j-1}.*``
``backbone.ida_up.{proj,up,node}_{j}.*``                    ``neck.ida_up.{proj,up,node}.{j-1}.*``
  inside a proj/node block: ``actf.0.*`` / ``conv.weight|bias`` / ``conv.conv_offset_mask.*``
                                                            ``bn.*`` / ``conv.conv.weight|bias`` / ``conv.offset_mask.*``
``branch.hm.*`` / ``branch.mov.*`` / ``branch.wh.*``        ``head.center.*`` / ``head.movement.*`` / ``head.box.*``
=========================================================  ===============================================

MOC's deformable layers (``DCN``: ``weight``, ``bias``, ``conv_offset_mask``) map onto
:class:`stad.models.backbones.neck.ModulatedDeformConv2d` unchanged: both split the offset-mask conv into
``o1, o2, mask``, use ``offset = cat(o1, o2)`` (y, x interleaved per kernel tap, the order DCNv2 and
``torchvision.ops.deform_conv2d`` share) and ``sigmoid(mask)``.

CenterNet COCO detectors (``ctdet_coco_resdcn18.pth``, ``ctdet_coco_dla_2x.pth``), from which MOC starts
training, load through :func:`map_centernet_coco_state_dict`: as MOC's ``load_coco_pretrained_model`` does,
body and neck keys gain the ``backbone.`` prefix (ResNet ``deconv_layers.*`` become
``backbone.deconv_layer.deconv_layers.*``), the size head ``wh.*`` becomes the box branch, and the COCO
centre (``hm.*``, 80 classes) and offset (``reg.*``) heads are dropped.

Dropped on purpose (never used by the original forward pass): ``backbone.base.level3.project.*`` and
``backbone.base.level4.project.*`` (see :data:`stad.models.backbones.dla.UNUSED_DLA_KEYS`) and a classifier
``backbone.base.fc.*`` if present. Any other unknown key is an error.
"""

from __future__ import annotations

import re
from typing import Any
from pathlib import Path

import torch
from torch import nn

from stad.errors import StadError

ARCHS = ("resnet_18", "dla_34")
DROPPED_DLA_PREFIXES = ("backbone.base.level3.project.", "backbone.base.level4.project.", "backbone.base.fc.")

_BRANCHES = {"branch.hm.": "head.center.", "branch.mov.": "head.movement.", "branch.wh.": "head.box."}
_DECONV = re.compile(r"^backbone\.deconv_layer\.deconv_layers\.(\d+)\.(.+)$")
_DLA_UP = re.compile(r"^backbone\.dla_up\.ida_(\d+)\.(proj|up|node)_(\d+)\.(.+)$")
_IDA_UP = re.compile(r"^backbone\.ida_up\.(proj|up|node)_(\d+)\.(.+)$")
_DECONV_PARTS = {1: "bn1", 3: "up", 4: "bn2"}  # positions 2 and 5 are ReLUs (no parameters)
_RESNET_BODY = ("backbone.conv1.", "backbone.bn1.", "backbone.layer1.", "backbone.layer2.", "backbone.layer3.", "backbone.layer4.")


def _dcn(rest: str, key: str) -> str:
    """Map a key inside a MOC ``DCN`` module (``weight``, ``bias``, ``conv_offset_mask.*``)."""
    if rest in ("weight", "bias"):
        return f"conv.{rest}"
    if rest.startswith("conv_offset_mask."):
        return "offset_mask." + rest[len("conv_offset_mask."):]
    raise StadError(f"unexpected key {key!r} in a MOC deformable conv")


def _deform_block(rest: str, key: str) -> str:
    """Map a key inside a MOC ``DeformConv`` block (``actf.0`` BN + ``conv`` DCN)."""
    if rest.startswith("actf.0."):
        return "bn." + rest[len("actf.0."):]
    if rest.startswith("conv."):
        return "conv." + _dcn(rest[len("conv."):], key)
    raise StadError(f"unexpected key {key!r} in a MOC DLA up-sampling block")


def _map_key(key: str, arch: str) -> str | None:
    """Our key for one MOC key (``None``: dropped on purpose)."""
    for theirs, ours in _BRANCHES.items():
        if key.startswith(theirs):
            return ours + key[len(theirs):]
    if arch == "resnet_18":
        if key.startswith(_RESNET_BODY):
            return "backbone.body." + key[len("backbone."):]
        m = _DECONV.match(key)
        if m:
            index, rest = int(m.group(1)), m.group(2)
            stage, pos = divmod(index, 6)
            if pos == 0:
                return f"neck.stages.{stage}.conv.{_dcn(rest, key)}"
            if pos in (1, 3, 4):
                return f"neck.stages.{stage}.{_DECONV_PARTS[pos]}.{rest}"
    else:
        if key.startswith(DROPPED_DLA_PREFIXES):
            return None
        if key.startswith("backbone.base."):
            return "backbone.body." + key[len("backbone.base."):]
        m = _DLA_UP.match(key)
        if m:
            i, part, j, rest = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
            rest = rest if part == "up" else _deform_block(rest, key)
            return f"neck.dla_up.{i}.{part}.{j - 1}.{rest}"
        m = _IDA_UP.match(key)
        if m:
            part, j, rest = m.group(1), int(m.group(2)), m.group(3)
            rest = rest if part == "up" else _deform_block(rest, key)
            return f"neck.ida_up.{part}.{j - 1}.{rest}"
    raise StadError(f"unexpected key {key!r} for a MOC {arch} checkpoint")


def map_moc_release_state_dict(state_dict: dict[str, torch.Tensor], arch: str = "resnet_18") -> dict[str, torch.Tensor]:
    """Convert a MOC-Detector release state dict to the key layout of ``build_moc`` models.

    Args:
        state_dict: the release file's ``"state_dict"`` (a ``module.`` prefix is stripped).
        arch: MOC's ``--arch``: ``"resnet_18"`` (needs ``deformable=True``) or ``"dla_34"``.

    Returns:
        A new state dict (same tensors) for ``MOCDetector.load_state_dict(..., strict=True)``.

    Raises:
        StadError: an unknown ``arch`` or a key outside the documented layout.
    """
    if arch not in ARCHS:
        raise StadError(f"arch must be one of {list(ARCHS)}, got {arch!r}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        new = _map_key(key, arch)
        if new is not None:
            out[new] = value
    return out


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str) -> None:
    """``model.load_state_dict(strict=True)`` with one clear error naming missing/unexpected keys and shapes.

    BatchNorm ``num_batches_tracked`` counters absent from old files (PyTorch < 0.4.1) keep the model's value.
    """
    own = model.state_dict()
    state_dict = dict(state_dict)
    for key, value in own.items():
        if key.endswith("num_batches_tracked") and key not in state_dict:
            state_dict[key] = value
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    mismatched = [
        f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and state_dict[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        hint = ""
        if any(".offset_mask." in k for k in unexpected):
            hint = " (the file has deformable convs: build the model with options.deformable=true)"
        raise StadError(
            f"{source} does not fit the model{hint}: missing keys {missing[:6]}{' ...' if len(missing) > 6 else ''}; "
            f"unexpected keys {unexpected[:6]}{' ...' if len(unexpected) > 6 else ''}; "
            f"shape mismatches {mismatched[:4]}{' ...' if len(mismatched) > 4 else ''}"
        )
    model.load_state_dict(state_dict, strict=True)


def read_weights_file(model: nn.Module, path: Path) -> Any:
    """Open a weights file: a stad checkpoint (``{"model": state_dict, ...}``) is loaded strictly into ``model``
    and None returned; anything else is returned as read, for the caller to recognise."""
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        load_state_dict_strict(model, obj["model"], source=str(path))
        return None
    return obj


def load_moc_weights(model: nn.Module, path: str | Path, *, arch: str) -> str:
    """Load a weights file into a MOC model, recognising its layout.

    * stad checkpoint (``{"model": state_dict, ...}``): loaded strictly as is;
    * MOC-Detector release (``{"state_dict": ...}`` with ``branch.*`` keys): :func:`map_moc_release_state_dict`;
    * CenterNet COCO detector (``{"state_dict": ...}`` with ``wh.*`` keys): :func:`load_centernet_coco_weights`
      (center and movement branches keep their initial values);
    * anything else is treated as ImageNet backbone weights (``model.backbone.load_imagenet_weights``).

    Returns:
        the recognised format: ``"stad"``, ``"moc_release"``, ``"centernet_coco"`` or ``"imagenet"``.
    """
    path = Path(path)
    obj = read_weights_file(model, path)
    if obj is None:
        return "stad"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        keys = [k[len("module."):] if k.startswith("module.") else k for k in obj["state_dict"]]
        if any(k.startswith("branch.") for k in keys):
            load_state_dict_strict(model, map_moc_release_state_dict(obj["state_dict"], arch), source=str(path))
            return "moc_release"
        if any(k.startswith("wh.") for k in keys):
            load_centernet_coco_weights(model, path, arch=arch)
            return "centernet_coco"
    model.backbone.load_imagenet_weights(path)
    return "imagenet"


CENTERNET_DROPPED_HEADS = ("hm.", "reg.")


def map_centernet_coco_state_dict(state_dict: dict[str, torch.Tensor], arch: str = "resnet_18") -> dict[str, torch.Tensor]:
    """Convert a CenterNet COCO detector state dict (MOC's ``--pretrain_model coco``) to our key layout.

    Returns the body, neck and box-branch weights; the center and movement branches are not in the file.
    """
    moc: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if key.startswith(CENTERNET_DROPPED_HEADS):
            continue
        if key.startswith("wh."):
            moc["branch." + key] = value
        elif key.startswith("deconv_layers."):
            moc["backbone.deconv_layer." + key] = value
        else:
            moc["backbone." + key] = value
    return map_moc_release_state_dict(moc, arch)


def load_centernet_coco_weights(model: nn.Module, path: str | Path, *, arch: str) -> list[str]:
    """Load a CenterNet COCO checkpoint file into a MOC model's backbone, neck and box branch.

    Returns:
        the model keys left at their initial values (the center and movement branches).

    Raises:
        StadError: a key of the file that the model does not have, or a shape mismatch (e.g. a
            ``wh_head_conv`` different from the file's head width).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    obj = torch.load(path, map_location="cpu", weights_only=False)
    sd = obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    mapped = map_centernet_coco_state_dict(sd, arch)
    own = model.state_dict()
    left = sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked"))
    outside_heads = [k for k in left if not k.startswith(("head.center.", "head.movement."))]
    if outside_heads:
        raise StadError(f"{path}: the COCO file lacks model keys outside the center/movement branches: {outside_heads[:6]}")
    load_state_dict_strict(model, {**own, **mapped}, source=str(path))
    return left
