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

from stad.data.safe_pickle import safe_torch_load
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
    and None returned; anything else is returned as read, for the caller to recognise.

    The file is read with ``torch.load(weights_only=True)`` and nothing allow-listed: stad checkpoints, MOC
    releases and CenterNet COCO files hold tensors and plain values only (a file never runs code).
    """
    obj = safe_torch_load(path, what="a weights file")
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
    obj = safe_torch_load(path, what="a CenterNet COCO checkpoint")  # weights_only=True, nothing allow-listed
    sd = obj["state_dict"] if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict) else obj
    mapped = map_centernet_coco_state_dict(sd, arch)
    own = model.state_dict()
    left = sorted(k for k in own if k not in mapped and not k.endswith("num_batches_tracked"))
    outside_heads = [k for k in left if not k.startswith(("head.center.", "head.movement."))]
    if outside_heads:
        raise StadError(f"{path}: the COCO file lacks model keys outside the center/movement branches: {outside_heads[:6]}")
    load_state_dict_strict(model, {**own, **mapped}, source=str(path))
    return left


# ---------------------------------------------------------------------------------------------------
# STEP (Yang et al., CVPR 2019): the released ``ava_step.pth`` / ``ava_cls.pth`` and ``i3d_kinetics.pth`` layouts
# (shared/methods/STEP.md §9). The functions are duck-typed on the stad modules: a STEP detector has
# ``backbone``, ``context_net`` (with ``i3d_conv``) and ``heads`` (a list of two-branch heads, each with
# ``i3d_conv``); the classification pre-training model has ``head`` instead of ``heads``.
#
# =====================================  ===========================================================
# STEP release key                        stad key (detector; the classifier uses ``head.`` for ``heads.0.``)
# =====================================  ===========================================================
# ``base_net``: ``module.base_model.*``   ``backbone.*`` (``stad.models.backbones.i3d.map_step_base_net_state_dict``)
# ``context_net``: ``module.i3d_conv_context.{1,2}.*``   ``context_net.i3d_conv.mixed_5{b,c}.*``
# ``det_net{k}``: ``i3d_conv.{0,1}.*``    ``heads.{k}.i3d_conv.mixed_5{b,c}.*``
# ``det_net{k}``: any other key ``x``     ``heads.{k}.x`` (``downsample``, ``global_cls``, ``local_conv``, ...)
# =====================================  ===========================================================

STEP_RELEASE_NETS = ("base_net", "context_net")


def torch_load_step_file(path: str | Path) -> Any:
    """``torch.load`` a STEP release file on the CPU with ``weights_only=True``, allowing the pickled
    ``argparse.Namespace`` of its ``cfg`` entry (never ``weights_only=False``)."""
    import argparse

    # STEP's train.py saves its parsed options, ``cfg``, as an argparse.Namespace: the one class allowed.
    return safe_torch_load(path, what="a STEP release file", allow=[argparse.Namespace])


def _strip(key: str) -> str:
    return key[len("module."):] if key.startswith("module.") else key


def _map_step_head(state_dict: dict[str, torch.Tensor], prefix: str, *, source: str) -> dict[str, torch.Tensor]:
    """One STEP ``det_net{k}`` state dict -> stad keys under ``prefix`` (``"heads.0."`` or ``"head."``)."""
    from stad.models.backbones.i3d import map_step_mixed5_state_dict

    try:
        out = {prefix + "i3d_conv." + k: v for k, v in map_step_mixed5_state_dict(state_dict, "i3d_conv").items()}
    except StadError as err:
        raise StadError(f"{source}: {err}") from None
    for key, value in state_dict.items():
        bare = _strip(key)
        if not bare.startswith("i3d_conv."):
            out[prefix + bare] = value
    return out


def _map_step_trunk(checkpoint: dict[str, Any], *, source: str) -> dict[str, torch.Tensor]:
    """``base_net`` + ``context_net`` of a STEP release dict -> ``backbone.*`` + ``context_net.i3d_conv.*``."""
    from stad.models.backbones.i3d import map_step_base_net_state_dict, map_step_mixed5_state_dict

    for name in STEP_RELEASE_NETS:
        if not isinstance(checkpoint.get(name), dict):
            raise StadError(f"{source}: no {name!r} state dict (keys: {sorted(checkpoint)})")
    context = checkpoint["context_net"]
    stray = [k for k in context if not _strip(k).startswith("i3d_conv_context.")]
    if stray:
        raise StadError(f"{source}: unexpected context_net key {stray[0]!r}")
    try:
        backbone = map_step_base_net_state_dict(checkpoint["base_net"])
        mixed5 = map_step_mixed5_state_dict(context, "module.i3d_conv_context")
    except StadError as err:
        raise StadError(f"{source}: {err}") from None
    out = {"backbone." + k: v for k, v in backbone.items()}
    out.update({"context_net.i3d_conv." + k: v for k, v in mixed5.items()})
    return out


def step_release_num_heads(checkpoint: dict[str, Any]) -> int:
    """Number of consecutive ``det_net0``, ``det_net1``, ... entries of a STEP release dict."""
    k = 0
    while isinstance(checkpoint.get(f"det_net{k}"), dict):
        k += 1
    return k


def map_step_release_state_dict(checkpoint: dict[str, Any], *, source: str = "STEP checkpoint") -> dict[str, torch.Tensor]:
    """Convert STEP's ``ava_step.pth`` dict (``base_net``, ``context_net``, ``det_net0..``) to STEP detector keys.

    Returns:
        ``backbone.*``, ``context_net.*`` and ``heads.{k}.*`` for every ``det_net{k}`` (same tensors); load it with
        :func:`load_state_dict_strict`, which names missing / unexpected keys and shape mismatches.
    """
    out = _map_step_trunk(checkpoint, source=source)
    for k in range(step_release_num_heads(checkpoint)):
        out.update(_map_step_head(checkpoint[f"det_net{k}"], f"heads.{k}.", source=f"{source} det_net{k}"))
    return out


def map_step_cls_release_state_dict(checkpoint: dict[str, Any], *, source: str = "STEP ava_cls checkpoint") -> dict[str, torch.Tensor]:
    """Convert STEP's ``ava_cls.pth`` dict (``base_net``, ``context_net``, ``det_net0`` with the global branch only)
    to the keys of the classification pre-training model (``backbone.*``, ``context_net.*``, ``head.*``)."""
    if not isinstance(checkpoint.get("det_net0"), dict):
        raise StadError(f"{source}: no 'det_net0' state dict (keys: {sorted(checkpoint)})")
    out = _map_step_trunk(checkpoint, source=source)
    out.update(_map_step_head(checkpoint["det_net0"], "head.", source=f"{source} det_net0"))
    return out


def _is_step_release(obj: Any) -> bool:
    return isinstance(obj, dict) and isinstance(obj.get("base_net"), dict) and isinstance(obj.get("det_net0"), dict)


def load_step_cls_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "classification weights") -> None:
    """Initialise a STEP detector from classification pre-training weights (STEP.md §5, as ``train.py`` does).

    ``backbone`` and ``context_net`` are loaded in full; every head gets the pre-trained head's ``i3d_conv``
    (Mixed_5b/5c) and ``downsample`` weights, while its ``global_cls`` is re-initialised (Xavier-normal, zero bias)
    and its local branch and neighbour regressors keep their fresh initialisation.

    Args:
        model: a STEP detector (``backbone``, ``context_net``, ``heads``).
        state_dict: weights in the classification model's layout (``backbone.*``, ``context_net.*``, ``head.*``),
            e.g. a ``step_cls`` model's ``state_dict()`` or :func:`map_step_cls_release_state_dict` of ``ava_cls.pth``.

    Raises:
        StadError: a missing or unexpected key, or a shape mismatch (named).
    """
    trunk = {k: v for k, v in state_dict.items() if k.startswith(("backbone.", "context_net."))}
    head = {k[len("head."):]: v for k, v in state_dict.items() if k.startswith("head.")}
    stray = sorted(set(state_dict) - set(trunk) - {"head." + k for k in head})
    if stray:
        raise StadError(f"{source}: unexpected keys {stray[:6]} (expected backbone.*, context_net.*, head.*)")
    for name in ("backbone", "context_net"):
        part = {k[len(name) + 1:]: v for k, v in trunk.items() if k.startswith(name + ".")}
        load_state_dict_strict(getattr(model, name), part, source=f"{source} ({name})")
    shared = {k: v for k, v in head.items() if k.startswith(("i3d_conv.", "downsample."))}
    unknown = sorted(k for k in head if k not in shared and not k.startswith("global_cls."))
    if unknown:
        raise StadError(f"{source}: unexpected head keys {unknown[:6]} (a classification head has i3d_conv, downsample, global_cls)")
    for k, head_module in enumerate(model.heads):
        own = head_module.state_dict()
        wanted = {key for key in own if key.startswith(("i3d_conv.", "downsample."))}
        missing = sorted(wanted - set(shared))
        if missing:
            raise StadError(f"{source}: missing head keys {missing[:6]}")
        load_state_dict_strict(head_module, {**own, **shared}, source=f"{source} (head {k})")
        head_module.reset_global_cls()


def load_i3d_kinetics_weights(model: nn.Module, path: str | Path) -> None:
    """Load a bare Kinetics I3D file (``i3d_kinetics.pth``) into a STEP model: the backbone, and the same
    Mixed_5b/5c weights into the context net and every head (STEP's ``build_conv``)."""
    from stad.models.backbones.i3d import map_i3d_kinetics_state_dict

    path = Path(path)
    obj = torch_load_step_file(path)
    if not isinstance(obj, dict):
        raise StadError(f"{path}: expected a state dict, got {type(obj).__name__}")
    try:
        backbone, mixed5 = map_i3d_kinetics_state_dict(obj)
    except StadError as err:
        raise StadError(f"{path}: {err}") from None
    load_state_dict_strict(model.backbone, backbone, source=f"{path} (backbone)")
    heads = list(model.heads) if hasattr(model, "heads") else [model.head]
    for name, module in [("context_net", model.context_net.i3d_conv)] + [(f"head {k}", h.i3d_conv) for k, h in enumerate(heads)]:
        load_state_dict_strict(module, mixed5, source=f"{path} (Mixed_5b/5c of {name})")


def load_step_release(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load STEP's released ``ava_step.pth`` (or ``ava_cls.pth``) into a stad STEP model, strictly.

    * a detector (``heads``) and a file with as many ``det_net{k}`` as heads: every net in full;
    * a detector and a classification file (``det_net0`` without local branch): :func:`load_step_cls_weights`;
    * the classification model (``head``) and a classification file: in full.

    The file is read with ``torch.load(weights_only=True)`` allowing only ``argparse.Namespace`` (its ``cfg``).

    Returns:
        the file's ``cfg`` as a dict (``{}`` if absent): T, max_iter, anchor_mode, label_dict, ...

    Raises:
        StadError: not a STEP release dict, a different number of heads, missing / unexpected keys or shapes.
    """
    path = Path(path)
    return _load_step_release_object(model, torch_load_step_file(path), path)


def _load_step_release_object(model: nn.Module, obj: Any, path: Path) -> dict[str, Any]:
    """:func:`load_step_release` of an already read file ``obj``."""
    if not _is_step_release(obj):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise StadError(f"{path}: not a STEP release checkpoint (needs base_net, context_net, det_net0; got {keys})")
    cfg = obj.get("cfg")
    cfg_dict = dict(vars(cfg)) if cfg is not None and hasattr(cfg, "__dict__") else dict(cfg or {})
    is_cls_file = not any(_strip(k).startswith("local_reg.") for k in obj["det_net0"])
    if hasattr(model, "heads"):
        if is_cls_file:
            load_step_cls_weights(model, map_step_cls_release_state_dict(obj, source=str(path)), source=str(path))
            return cfg_dict
        num = step_release_num_heads(obj)
        if num != len(model.heads):
            raise StadError(f"{path}: the file has {num} heads (det_net0..{num - 1}), the model {len(model.heads)} steps")
        load_state_dict_strict(model, map_step_release_state_dict(obj, source=str(path)), source=str(path))
    else:
        if not is_cls_file:
            raise StadError(f"{path}: a STEP detector file cannot be loaded into the classification model")
        load_state_dict_strict(model, map_step_cls_release_state_dict(obj, source=str(path)), source=str(path))
    return cfg_dict


def read_step_cls_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Classification pre-training weights of a file in the classification model's layout: a stad checkpoint
    (``{"model": state_dict}``) of a ``step_cls`` model, or STEP's ``ava_cls.pth``."""
    path = Path(path)
    obj = torch_load_step_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        return obj["model"]
    if _is_step_release(obj):
        return map_step_cls_release_state_dict(obj, source=str(path))
    raise StadError(f"{path}: neither a stad step_cls checkpoint ('model') nor STEP's ava_cls.pth (base_net, det_net0)")


def load_step_weights(model: nn.Module, path: str | Path) -> str:
    """Load a weights file into a STEP model (detector or classifier), recognising its layout.

    Returns:
        ``"stad"`` (a stad checkpoint ``{"model": state_dict, ...}``, loaded strictly) or ``"step_release"``
        (:func:`load_step_release`).
    """
    path = Path(path)
    obj = torch_load_step_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        load_state_dict_strict(model, obj["model"], source=str(path))
        return "stad"
    _load_step_release_object(model, obj, path)
    return "step_release"
