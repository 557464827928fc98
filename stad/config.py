"""Typed run configuration: dataclasses loaded from YAML, with ``key.sub=value`` overrides.

A run is described by one :class:`Config` with four sections::

    data:  DataConfig    which clips to read and how (data set kind, paths, K, batch size ...)
    model: ModelConfig   which detector (name, backbone, num_classes) + model-specific ``options``
    train: TrainConfig   optimizer, schedule, mixed precision, checkpoints, logging
    eval:  EvalConfig    evaluation settings (subset, IoU thresholds) + method-specific ``options``

Configs are read in one place (STYLE.md habit 4): each detector's ``build(cfg.model)`` and the
engine turn a section into plain constructor arguments; no component takes the whole config.

Loading rules (:func:`load_config`):

* the YAML file must be a mapping of sections; a missing section or field keeps its default;
* an unknown key is an error naming it and listing the valid keys (no silent typos);
* every value is checked against the dataclass field's type: ``int`` fields reject floats and
  booleans, ``float`` fields accept ints and numeric strings such as ``1e-3`` (YAML 1.1 reads
  that as a string), ``Literal`` fields accept only their listed values, ``X | None`` accepts
  ``null``, ``list``/``tuple``/``dict`` fields check their items;
* overrides ``section.field=value`` (``value`` parsed with ``yaml.safe_load``) are applied after
  the file, in order; ``dict`` fields take sub-keys (``model.options.head_conv=128``).

:func:`save_config` writes the resolved configuration as YAML; ``load_config`` of that file gives
back an equal :class:`Config`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from stad.errors import StadError
from stad.textio import read_text

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "save_config",
]


def _require(condition: bool, key: str, value: Any, rule: str) -> None:
    """Raise a StadError naming ``key`` and ``value`` when ``condition`` is false."""
    if not condition:
        raise StadError(f"config key '{key}' {rule}, got {value!r}")


@dataclass
class DataConfig:
    """Where the clips come from and how they are batched.

    Attributes:
        kind: annotation layout: ``act`` (UCF101-24/JHMDB-21 pickles), ``ava`` (CSV),
            ``custom`` (stad's JSON format) or ``synthetic`` (rendered benchmark).
        root: folder of the frames (ACT/AVA layout), relative paths are relative to the working dir.
        gt_file: ground-truth file (ACT pickle, AVA CSV, custom JSON); empty for ``synthetic``.
        split: 1-based split of the data set (JHMDB has 3, UCF101-24 has 1).
        input_size: network input ``(height, width)`` in pixels.
        K: tubelet length in frames (frames per clip for tubelet detectors).
        batch_size: clips per batch on each process (the global batch is this x world size).
        num_workers: DataLoader worker processes.
        augment: apply the training augmentations (photometric, expand, crop, flip).
        options: data-specific values (e.g. ``stream: flow``, ``flow_frames: 5``, ``num_frames``).
    """

    kind: Literal["act", "ava", "custom", "synthetic"] = "act"
    root: str = ""
    gt_file: str = ""
    split: int = 1
    input_size: tuple[int, int] = (288, 288)
    K: int = 7
    batch_size: int = 8
    num_workers: int = 4
    augment: bool = True
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.split >= 1, "data.split", self.split, "must be >= 1")
        _require(all(s > 0 for s in self.input_size), "data.input_size", self.input_size, "must be positive")
        _require(self.K >= 1, "data.K", self.K, "must be >= 1")
        _require(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")
        _require(self.num_workers >= 0, "data.num_workers", self.num_workers, "must be >= 0")


@dataclass
class ModelConfig:
    """Which detector to build; each detector's ``build(cfg)`` reads it.

    Attributes:
        name: detector name in ``stad.models.registry`` (e.g. ``moc``).
        backbone: backbone name (e.g. ``resnet18``, ``dla34``).
        num_classes: number of action classes, background excluded (STYLE.md anti-pattern 6).
        weights: optional path of initial weights (ImageNet/COCO/release checkpoint) or ``null``.
        labels: class names in output order (filled from the data set by ``stad train``; stored in
            checkpoints so that ``stad detect`` can name what it finds).
        label_ids: the data set's own id of each class where it has one (AVA label-map action ids, filled by
            ``stad train`` for keyframe models so that prediction CSVs carry them); empty otherwise.
        options: model-specific values (head_conv, loss weights, deformable convs ...), read only
            by that model's ``build``.
    """

    name: str = "moc"
    backbone: str = "resnet18"
    num_classes: int = 24
    weights: str | None = None
    labels: list[str] = field(default_factory=list)
    label_ids: list[int] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(not self.labels or len(self.labels) == self.num_classes, "model.labels", self.labels,
                 f"must name model.num_classes={self.num_classes} classes")
        _require(not self.label_ids or len(self.label_ids) == self.num_classes, "model.label_ids", self.label_ids,
                 f"must give one id per class (model.num_classes={self.num_classes})")
        _require(self.num_classes >= 1, "model.num_classes", self.num_classes, "must be >= 1")


@dataclass
class TrainConfig:
    """Optimisation, schedule, precision, checkpointing and logging of :func:`stad.engine.train.fit`.

    Attributes:
        epochs: number of training epochs.
        optimizer: ``adamw``, ``adam`` or ``sgd`` (``momentum`` and ``nesterov`` apply to sgd only).
        lr: peak learning rate (after warm-up).
        weight_decay: decoupled (AdamW) or L2 (SGD) weight decay on all parameters.
        momentum: SGD momentum.
        nesterov: SGD with Nesterov momentum.
        scheduler: ``cosine`` (to 0 over all iterations), ``warmup_cosine`` (STEP's: the warm-up, then a cosine
            to 0 over the remaining iterations), ``step`` (x ``gamma`` at each epoch in ``milestones``) or
            ``none``; updated every iteration.
        warmup_iters: linear warm-up iterations from ``warmup_factor * lr`` to ``lr`` (0 = none).
        warmup_epochs: the warm-up in epochs instead (``round(warmup_epochs * iterations per epoch)`` iterations;
            FBIL / ACAR-Net warm up for one epoch); 0 = use ``warmup_iters``; not both.
        warmup_factor: learning-rate factor at iteration 0 of the warm-up.
        milestones: epochs (0-based, increasing) at which the ``step`` scheduler multiplies by ``gamma``.
        gamma: step decay factor.
        grad_clip: maximum global gradient L2 norm, ``null`` for no clipping.
        amp: mixed precision: ``none``, ``bf16`` (CUDA or CPU) or ``fp16`` (CUDA, with a GradScaler).
        seed: seed of torch / numpy / random (each process adds its rank).
        device: ``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``.
        log_every: iterations between TensorBoard scalars and progress-bar updates.
        val_every: epochs between validations (0 = only after the last epoch when an evaluator is given).
        checkpoint_every: epochs between numbered checkpoints ``epoch_NNNN.pt`` (0 = none);
            ``last.pt`` is written after every epoch and ``best.pt`` when ``best_metric`` improves.
        best_metric: name of the validation metric that selects ``best.pt`` (``null`` = no best).
        best_mode: ``max`` (e.g. mAP) or ``min`` (e.g. a loss).
        output_dir: run folder for checkpoints, TensorBoard events and the resolved config.
        resume: checkpoint to continue from (model, optimizer, scheduler, scaler, epoch, RNG), or ``null``.
    """

    epochs: int = 12
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = 5e-4
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    scheduler: Literal["cosine", "warmup_cosine", "step", "none"] = "step"
    warmup_iters: int = 0
    warmup_epochs: float = 0.0
    warmup_factor: float = 0.001
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.1
    grad_clip: float | None = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    seed: int = 0
    device: str = "auto"
    log_every: int = 20
    val_every: int = 1
    checkpoint_every: int = 1
    best_metric: str | None = None
    best_mode: Literal["max", "min"] = "max"
    output_dir: str = "runs/default"
    resume: str | None = None

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.epochs", self.epochs, "must be >= 1")
        _require(self.lr > 0, "train.lr", self.lr, "must be > 0")
        _require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0")
        _require(self.warmup_iters >= 0, "train.warmup_iters", self.warmup_iters, "must be >= 0")
        _require(self.warmup_epochs >= 0, "train.warmup_epochs", self.warmup_epochs, "must be >= 0")
        _require(not (self.warmup_epochs and self.warmup_iters), "train.warmup_epochs", self.warmup_epochs,
                 "cannot be combined with train.warmup_iters (set one)")
        _require(0 < self.warmup_factor <= 1, "train.warmup_factor", self.warmup_factor, "must be in (0, 1]")
        _require(
            all(b > a for a, b in zip(self.milestones, self.milestones[1:])) and all(m >= 0 for m in self.milestones),
            "train.milestones", self.milestones, "must be increasing epochs >= 0",
        )
        _require(self.grad_clip is None or self.grad_clip > 0, "train.grad_clip", self.grad_clip, "must be > 0 or null")
        _require(self.log_every >= 1, "train.log_every", self.log_every, "must be >= 1")
        _require(self.val_every >= 0, "train.val_every", self.val_every, "must be >= 0")
        _require(self.checkpoint_every >= 0, "train.checkpoint_every", self.checkpoint_every, "must be >= 0")


@dataclass
class EvalConfig:
    """Evaluation settings shared by the detectors' evaluators (PROTOCOLS.md).

    Attributes:
        subset: ``test`` or ``train`` videos of ``data.split``.
        batch_size: clips per batch at inference.
        frame_iou: frame-mAP IoU threshold.
        video_ious: video-mAP spatio-temporal IoU thresholds.
        options: method-specific values (linking, NMS, top-k ...).
    """

    subset: Literal["train", "test"] = "test"
    batch_size: int = 1
    frame_iou: float = 0.5
    video_ious: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.2, 0.3, 0.5, 0.75])
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "eval.batch_size", self.batch_size, "must be >= 1")
        _require(0 < self.frame_iou <= 1, "eval.frame_iou", self.frame_iou, "must be in (0, 1]")
        _require(all(0 < t <= 1 for t in self.video_ious), "eval.video_ious", self.video_ious, "must be in (0, 1]")


@dataclass
class Config:
    """A whole run: the four sections (see the module docstring)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


# ---------------------------------------------------------------------------------------------
# Type checking of values against field annotations


def _type_name(annotation: Any) -> str:
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type) and typing.get_origin(annotation) is None:
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def _type_error(key: str, value: Any, annotation: Any) -> StadError:
    return StadError(
        f"config key '{key}': expected {_type_name(annotation)}, got {value!r} ({type(value).__name__})"
    )


def _check_value(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` converted to ``annotation`` or raise a StadError naming ``key`` and ``value``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if isinstance(value, annotation):
            return value
        if not isinstance(value, dict):
            raise _type_error(key, value, annotation)
        return _dataclass_from_dict(annotation, value, key)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise _type_error(key, value, annotation)
        for option in args:
            if option is type(None):
                continue
            try:
                return _check_value(value, option, key)
            except StadError:
                continue
        raise _type_error(key, value, annotation)
    if origin is Literal:
        if not any(type(value) is type(choice) and value == choice for choice in args):
            choices = ", ".join(repr(a) for a in args)
            raise StadError(f"config key '{key}': expected one of {choices}, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise _type_error(key, value, annotation)
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _type_error(key, value, annotation)
        return value
    if annotation is float:
        if isinstance(value, bool):
            raise _type_error(key, value, annotation)
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise _type_error(key, value, annotation) from None
        raise _type_error(key, value, annotation)
    if annotation is str:
        if not isinstance(value, str):
            raise _type_error(key, value, annotation)
        return value
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, annotation)
        return [_check_value(item, args[0], f"{key}[{i}]") for i, item in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _type_error(key, value, annotation)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_check_value(item, args[0], f"{key}[{i}]") for i, item in enumerate(value))
        if len(value) != len(args):
            raise StadError(f"config key '{key}': expected {len(args)} values, got {value!r}")
        return tuple(_check_value(item, arg, f"{key}[{i}]") for i, (item, arg) in enumerate(zip(value, args)))
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, annotation)
        key_type, value_type = args
        return {
            _check_value(k, key_type, f"{key} key"): _check_value(v, value_type, f"{key}.{k}")
            for k, v in value.items()
        }
    raise TypeError(f"unsupported config annotation {annotation!r} for '{key}'")  # internal: a new field type


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _unknown_key(key: str, where: str, valid: list[str]) -> StadError:
    return StadError(f"unknown config key '{key}'{where}; valid keys: {', '.join(valid)}")


def _dataclass_from_dict(cls: type, values: dict[str, Any], prefix: str) -> Any:
    """Build dataclass ``cls`` from a mapping, checking every key and value type."""
    field_types = _field_types(cls)
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in field_types:
            where = f" under '{prefix}'" if prefix else ""
            raise _unknown_key(key, where, list(field_types))
        kwargs[name] = _check_value(value, field_types[name], key)
    return cls(**kwargs)


# ---------------------------------------------------------------------------------------------
# Public API


def config_from_dict(values: dict[str, Any]) -> Config:
    """Build a :class:`Config` from nested plain values (as read from YAML); type-checked.

    Raises:
        StadError: unknown key (named, with the valid keys) or a value of the wrong type.
    """
    if not isinstance(values, dict):
        raise StadError(f"a config must be a mapping of sections, got {type(values).__name__}")
    return _dataclass_from_dict(Config, values, "")


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain ``dict``/``list`` values of a config dataclass (tuples become lists), YAML- and
    ``torch.load(weights_only=True)``-safe."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return plain(cfg)


def _parse_override(override: str) -> tuple[list[str], Any]:
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise StadError(f"config override {override!r} must look like 'section.key=value'")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise StadError(f"config override {override!r}: value is not valid YAML ({err})") from None
    return key.split("."), value


def apply_overrides(cfg: Config, overrides: list[str]) -> Config:
    """Return a new :class:`Config` with ``section.field=value`` overrides applied in order.

    ``value`` is parsed with ``yaml.safe_load`` (``3`` int, ``0.1`` float, ``[1, 2]`` list, ``null``
    None, ``true`` bool, anything else a string) and checked against the field's type. A ``dict``
    field takes deeper keys (``model.options.loss.wh=0.1`` creates nested dicts as needed).

    Raises:
        StadError: malformed override, unknown key (valid keys listed) or a wrong value type.
    """
    values = config_to_dict(cfg)
    for override in overrides:
        path, value = _parse_override(override)
        cls: Any = Config
        node = values
        for depth, name in enumerate(path):
            key = ".".join(path[: depth + 1])
            field_types = _field_types(cls)
            if name not in field_types:
                where = f" under '{'.'.join(path[:depth])}'" if depth else ""
                raise StadError(f"{_unknown_key(key, where, list(field_types))} (in override {override!r})")
            annotation = field_types[name]
            last = depth == len(path) - 1
            if last:
                # Check now to name the override; the final rebuild checks the whole config again.
                try:
                    _check_value(value, annotation, key)
                except StadError as err:
                    raise StadError(f"{err} (in override {override!r})") from None
                node[name] = value
                break
            if dataclasses.is_dataclass(annotation):
                cls, node = annotation, node[name]
                continue
            if typing.get_origin(annotation) is dict:
                target = node[name]
                for sub in path[depth + 1 : -1]:
                    if not isinstance(target.get(sub, {}), dict):
                        raise StadError(f"config override {override!r}: '{sub}' is not a mapping")
                    target = target.setdefault(sub, {})
                target[path[-1]] = value
                break
            raise StadError(f"config override {override!r}: '{key}' has no sub-keys")
    return config_from_dict(values)


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML config file and apply ``section.field=value`` overrides.

    Args:
        path: YAML file with any of the sections ``data``, ``model``, ``train``, ``eval``.
        overrides: ``section.field=value`` strings, applied in order after the file.

    Returns:
        The resolved, type-checked :class:`Config`.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        StadError: invalid YAML, unknown keys or wrong value types, naming the file and key.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(read_text(path, what="a YAML config"))
    except yaml.YAMLError as err:
        raise StadError(f"{path}: not valid YAML ({err})") from None
    if values is None:
        values = {}
    try:
        cfg = config_from_dict(values)
    except StadError as err:
        raise StadError(f"{path}: {err}") from None
    return apply_overrides(cfg, list(overrides))


def save_config(cfg: Config, path: str | Path) -> Path:
    """Write ``cfg`` as YAML to ``path`` (parents created); ``load_config(path)`` gives it back."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
    path.write_text(text, encoding="utf-8")
    return path
