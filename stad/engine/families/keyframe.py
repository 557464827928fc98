"""The keyframe family (STEP, FBIL): keyframe clips (+ proposals), actor predictions, AVA frame-mAP.

Flow (AVA-style, 1 Hz keyframes, multi-label actors)::

    AVA CSV + label map (+ excluded timestamps) ──read_keyframe_annotations──▶ keyframes (actors, multi-hot)
    frames (ava / step / acar layout) ──the method's clip rule──▶ clip around each keyframe
    training: KeyframeDataset(foreground keyframes, the method's augmentation) ──▶ model(batch) -> losses
    testing:  every keyframe of the eval videos ──model.detect──▶ per stage (STEP: step 1, 2, 3) boxes x classes
              ──▶ AVA prediction rows (normalised boxes, action ids) ──stad.eval.ava_map──▶ frame-mAP@0.5

``data.kind`` is ``synthetic`` (``stad synth --layout ava``: ``<root>/annotations/<name>_{train,val}.csv``, its
label map and excluded timestamps; rendered into an empty folder as the other families do) or ``ava`` (any AVA
data set: the files are named in ``data.options``). ``data.options`` keys of this family:

* ``train_csv``, ``val_csv``, ``labelmap``, ``train_excluded``, ``val_excluded``: the AVA files (``ava`` only);
* ``layout``: ``auto`` (default: recognised from disk), ``ava``, ``step`` or ``acar``; ``fps``, ``timestamp_start``
  for the flat layouts (default 30 and 0 for ``ava``, 30 and 900 for ``acar``);
* ``first_timestamp``, ``last_timestamp``: the keyframes evaluated (AVA: 902 and 1798; synthetic: 1 and none);
* ``proposals_train``, ``proposals_val``: person proposals (mmaction2 pickle or CSV) for methods that use them;
* the synthetic data set's settings (``preset``, ``videos``, ``frames``, ...; see ``stad.data.synthetic``) and the
  augmentation switches ``photometric``, ``crop``, ``flip``, ``erase``;
* ``train_stream``, ``stream_videos``, ``stream_clips``, ``negative_fraction``: training keyframes rendered on the fly
  (synthetic only, :func:`build_train_loader`).

Every keyframe of the evaluated videos is scored, labelled or not (STEP's ``foreground_only=False``): detections on
keyframes without ground truth are false positives, as with the official evaluator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from stad.config import Config
from stad.data.ava import AVARows, LabelMap, read_ava_annotations, read_excluded_timestamps, read_labelmap
from stad.data.keyframes import (
    ACAR_NORMALIZATION,
    STEP_NORMALIZATION,
    AcarClipRule,
    ClipNormalization,
    FrameLayout,
    KeyframeDataset,
    StepClipRule,
    collate_keyframes,
    collate_keyframes_padded,
    enumerate_keyframes,
    read_keyframe_annotations,
    resolve_layout,
    second_index,
)
from stad.data.transforms import (
    Transform,
    build_fbil_test_transform,
    build_fbil_train_transform,
    build_step_test_transform,
    build_step_train_transform,
)
from stad.engine.families.base import Family, output_dir
from stad.engine.families.common import (
    STREAM_OPTIONS,
    check_checkpoint_labels,
    check_options,
    ensure_synthetic,
    load_detector,
    negative_fraction,
    resolve_labels,
    train_dataloader,
    train_stream,
)
from stad.errors import StadError
from stad.structures import KeyframeDetections, KeyframeLabels

FILE_OPTIONS = ("train_csv", "val_csv", "labelmap", "train_excluded", "val_excluded", "proposals_train", "proposals_val",
                "train_visibility", "val_visibility")
CLIP_OPTIONS = ("layout", "fps", "timestamp_start", "first_timestamp", "last_timestamp", "clip_size", "clip_step")
AUGMENT_OPTIONS = ("photometric", "crop", "flip", "erase")
INFER_OPTIONS = ("conf_thresh", "nms_thresh", "top_n", "max_keyframes")


@dataclass(frozen=True)
class MethodData:
    """How a keyframe method reads its clips.

    Attributes:
        clip_rule: the frames of a keyframe's clip (e.g. :class:`stad.data.keyframes.StepClipRule`); ACAR's
            window rule takes ``data.options.clip_size`` / ``clip_step`` (:func:`clip_rule`).
        normalization: the pixel normalisation of the clip.
        train_transform: ``(input_size, **switches) -> Transform``, the training augmentation (``switches``: the
            ``data.options`` keys of :data:`AUGMENT_OPTIONS` that the config sets).
        test_transform: ``(input_size) -> Transform``.
        collate: the batch collate function (padded batches for methods whose clip sizes vary).
        fixed_size: every clip is ``data.input_size`` (STEP); False: the transform decides (FBIL: the short side
            is ``input_size[0]``, the long side follows the video's aspect ratio).
    """

    clip_rule: Any
    normalization: ClipNormalization
    train_transform: Callable[..., Transform]
    test_transform: Callable[..., Transform]
    collate: Callable[..., Any] = collate_keyframes
    fixed_size: bool = True


def _fbil_train(size: tuple[int, ...], *, flip: bool = True, **switches: bool) -> Transform:
    if switches:
        raise StadError(f"FBIL / ACAR-Net training augmentation has only 'flip' (data.options), got {sorted(switches)}")
    return build_fbil_train_transform(int(size[0]), flip=flip)


def _fbil_test(size: tuple[int, ...]) -> Transform:
    return build_fbil_test_transform(int(size[0]))


_STEP_DATA = MethodData(StepClipRule(), STEP_NORMALIZATION, build_step_train_transform, build_step_test_transform)
# FBIL.md §2: 32 frames (window 64, every 2nd) around the keyframe, short side 256, flip only, padded batches
_ACAR_DATA = MethodData(AcarClipRule(), ACAR_NORMALIZATION, _fbil_train, _fbil_test, collate_keyframes_padded, False)
# model.name -> its data rules (STEP.md §2, FBIL.md §2)
METHOD_DATA: dict[str, MethodData] = {"step": _STEP_DATA, "step_cls": _STEP_DATA, "fbil": _ACAR_DATA, "acar": _ACAR_DATA}


def clip_rule(cfg: Config, rules: MethodData) -> Any:
    """The method's clip rule; ACAR's window takes ``data.options.clip_size`` (64) and ``clip_step`` (2)."""
    size, step = cfg.data.options.get("clip_size"), cfg.data.options.get("clip_step")
    if size is None and step is None:
        return rules.clip_rule
    if not isinstance(rules.clip_rule, AcarClipRule):
        raise StadError(f"data.options.clip_size / clip_step set the ACAR/FBIL clip window; {cfg.model.name} has "
                        f"{rules.clip_rule!r}")
    return AcarClipRule(size=int(size or rules.clip_rule.size), step=int(step or rules.clip_rule.step))


def _transform(cfg: Config, rules: MethodData, *, train: bool) -> Transform:
    """The method's training augmentation (``data.augment``; switches from ``data.options``) or test transform."""
    size = tuple(int(v) for v in cfg.data.input_size)
    if train and cfg.data.augment:
        return rules.train_transform(size, **{k: bool(cfg.data.options[k]) for k in AUGMENT_OPTIONS if k in cfg.data.options})
    return rules.test_transform(size)


@dataclass
class KeyframeData:
    """A keyframe data set read from a config.

    Attributes:
        layout: where the frames are.
        labelmap: the evaluated classes (``C``), in label-map order (class index ``c`` = ``labelmap.ids[c]``).
        train: the annotated keyframes of the training annotations (all; neighbour boxes are looked up here).
        eval_annotations: the annotated keyframes of the evaluated split (``eval.subset``).
        eval_gt: the evaluated split's ground-truth rows (for :func:`stad.eval.ava_map.ava_map`).
        excluded: the evaluated split's excluded ``(video, second)`` keyframes.
        eval_videos: the videos evaluated.
        first_timestamp, last_timestamp: the keyframe range evaluated (None: no bound).
        proposals: ``"train"`` / ``"val"`` -> ``(video, second) -> (P, 5)`` normalised boxes + score, when given.
        eval_visibility: ``(M,)`` visible fraction of each row of ``eval_gt`` (synthetic data), or None.
        source: a readable description (files) for reports.
    """

    layout: FrameLayout
    labelmap: LabelMap
    train: list[KeyframeLabels]
    eval_annotations: list[KeyframeLabels]
    eval_gt: AVARows
    excluded: set[tuple[str, int]]
    eval_videos: list[str]
    first_timestamp: int | None = None
    last_timestamp: int | None = None
    proposals: dict[str, dict[tuple[str, int], np.ndarray]] = field(default_factory=dict)
    eval_visibility: np.ndarray | None = None
    source: dict[str, str] = field(default_factory=dict)

    @property
    def labels(self) -> list[str]:
        return self.labelmap.display_names()

    def eval_keyframes(self, max_keyframes: int | None = None) -> list[KeyframeLabels]:
        """Every keyframe of the evaluated videos in range (labelled or not), the first ``max_keyframes`` if set."""
        keyframes = enumerate_keyframes(
            self.layout, self.eval_videos, self.eval_annotations, num_classes=len(self.labelmap),
            first=self.first_timestamp, last=self.last_timestamp, excluded=self.excluded,
        )
        return keyframes[: int(max_keyframes)] if max_keyframes else keyframes


# ---------------------------------------------------------------------------------------------------
# Data


def _synthetic_files(cfg: Config, progress: bool) -> tuple[Path, dict[str, Any]]:
    """Render or reuse the synthetic data set (AVA layout) and name its files as ``data.options`` would."""
    import json

    root = ensure_synthetic(cfg.data, layout="ava", progress=progress)
    name = json.loads((root / "synth.json").read_text())["config"]["name"]
    ann = root / "annotations"
    return root, {
        "train_csv": ann / f"{name}_train.csv", "val_csv": ann / f"{name}_val.csv", "labelmap": ann / f"{name}_action_list.pbtxt",
        "train_excluded": ann / f"{name}_train_excluded_timestamps.csv", "val_excluded": ann / f"{name}_val_excluded_timestamps.csv",
        **{f"{split}_visibility": ann / f"{name}_{split}_visibility.csv" for split in ("train", "val")
           if (ann / f"{name}_{split}_visibility.csv").is_file()},  # absent in renderings of older stad versions
        "layout": "ava", "first_timestamp": 1,
    }


def load_data(cfg: Config, *, progress: bool = True) -> KeyframeData:
    """Read the keyframe data set of ``cfg.data`` (module docstring); the evaluated split is ``eval.subset``."""
    from stad.data.synthetic import SYNTH_OPTIONS

    d = cfg.data
    check_options(d.options, (*FILE_OPTIONS, *CLIP_OPTIONS, *AUGMENT_OPTIONS, *SYNTH_OPTIONS, *STREAM_OPTIONS),
                  "data.options")
    if d.kind == "synthetic":
        root, files = _synthetic_files(cfg, progress)
        options = {**files, **{k: v for k, v in d.options.items() if k in ("proposals_train", "proposals_val")}}
    elif d.kind == "ava":
        if not d.root:
            raise StadError("config key 'data.root' must name the folder of the frames for data.kind='ava'")
        root, options = Path(d.root), dict(d.options)
        for key in ("train_csv", "val_csv", "labelmap"):
            if not options.get(key):
                raise StadError(f"config key 'data.options.{key}' must name the AVA file for data.kind='ava'")
    else:
        raise StadError(f"data.kind={d.kind!r} is not a keyframe data set (use ava or synthetic)")
    labelmap = read_labelmap(options["labelmap"])
    split = "train" if cfg.eval.subset == "train" else "val"

    def excluded_of(which: str) -> set[tuple[str, int]]:
        path = options.get(f"{which}_excluded")
        return read_excluded_timestamps(path) if path else set()

    train_excluded, eval_excluded = excluded_of("train"), excluded_of(split)
    train = read_keyframe_annotations(options["train_csv"], labelmap, excluded=train_excluded)
    eval_gt = read_ava_annotations(options[f"{split}_csv"])
    eval_annotations = train if split == "train" else read_keyframe_annotations(eval_gt, labelmap, excluded=eval_excluded)
    eval_videos = sorted({k.video for k in eval_annotations})
    if not train:
        raise StadError(f"{options['train_csv']}: no training keyframe has an actor of the label map's classes")
    if not eval_videos:
        raise StadError(f"{options[f'{split}_csv']}: no keyframe to evaluate")
    layout = resolve_layout(
        root, sorted({k.video for k in train} | set(eval_videos)), str(options.get("layout", "auto")),
        fps=options.get("fps"), timestamp_start=options.get("timestamp_start"),
    )
    proposals = {which: _read_proposals(options[f"proposals_{which}"]) for which in ("train", "val") if options.get(f"proposals_{which}")}
    first, last = options.get("first_timestamp"), options.get("last_timestamp")
    visibility = _row_visibility(eval_gt, options[f"{split}_visibility"]) if options.get(f"{split}_visibility") else None
    return KeyframeData(
        layout=layout, labelmap=labelmap, train=train, eval_annotations=eval_annotations, eval_gt=eval_gt,
        excluded=eval_excluded, eval_videos=eval_videos, first_timestamp=None if first is None else int(first),
        last_timestamp=None if last is None else int(last), proposals=proposals, eval_visibility=visibility,
        source={k: str(v) for k, v in options.items() if k in FILE_OPTIONS and v},
    )


def _row_visibility(rows: AVARows, path: str | Path) -> np.ndarray:
    """``(M,)`` visibility of each ground-truth row from a per-actor visibility CSV (by video, second, person id)."""
    from stad.data.ava import read_actor_visibility

    table = read_actor_visibility(path)
    keys = list(zip(rows.video.tolist(), rows.timestamp.tolist(), rows.person_id.tolist()))
    missing = [k for k in keys if k not in table]
    if missing:
        raise StadError(f"{path}: no visibility for {len(missing)} ground-truth actor(s) of {rows.path}, e.g. "
                        f"{','.join(str(v) for v in missing[0])} (video, second, person id)")
    return np.asarray([table[k] for k in keys], np.float64)


def _read_proposals(path: str | Path) -> dict[tuple[str, int], np.ndarray]:
    """Person proposals from an mmaction2 dense-proposal pickle or a proposals CSV (by the file's suffix)."""
    from stad.data.ava import read_proposals
    from stad.data.keyframes import read_proposals_csv

    return read_proposals_csv(path) if str(path).lower().endswith(".csv") else read_proposals(path)


def resolve_model_config(cfg: Config, data: KeyframeData) -> Config:
    """Classes from the label map; the network input size from ``data.input_size`` (STEP: square)."""
    if cfg.model.name not in METHOD_DATA:
        raise StadError(f"model.name={cfg.model.name!r} is not a keyframe model ({', '.join(sorted(METHOD_DATA))})")
    check_options(cfg.eval.options, INFER_OPTIONS, "eval.options")
    cfg = resolve_labels(cfg, data.labels)
    ids = list(data.labelmap.ids)
    if cfg.model.label_ids and list(cfg.model.label_ids) != ids:
        raise StadError(f"config 'model.label_ids' {cfg.model.label_ids} differ from the label map's ids {ids}")
    options = dict(cfg.model.options)
    size = list(cfg.data.input_size)
    if options.get("input_size", size) not in (size, tuple(size), size[0] if size[0] == size[1] else None):
        raise StadError(f"model.options.input_size={options['input_size']} differs from data.input_size={size}")
    options["input_size"] = size
    return replace(cfg, model=replace(cfg.model, label_ids=ids, options=options))


def _dataset(cfg: Config, data: KeyframeData, keyframes: list[KeyframeLabels], *, train: bool, method: str) -> KeyframeDataset:
    rules = METHOD_DATA[method]
    size = tuple(int(v) for v in cfg.data.input_size)
    which = "train" if train else ("train" if cfg.eval.subset == "train" else "val")
    return KeyframeDataset(
        keyframes, data.layout, clip_rule=clip_rule(cfg, rules), input_size=size if rules.fixed_size else None,
        num_classes=len(data.labelmap), transform=_transform(cfg, rules, train=train), normalization=rules.normalization,
        seed=cfg.train.seed, foreground_only=train, neighbor_annotations=data.train if which == "train" else data.eval_annotations,
        proposals=data.proposals.get(which),
    )


def build_train_loader(cfg: Config, data: KeyframeData, model: torch.nn.Module) -> DataLoader:
    """Training loader of the foreground keyframes (at least one actor) with the method's augmentation, DDP-aware.

    ``data.options.train_stream: true`` (synthetic data) renders the training keyframes on the fly instead
    (:class:`stad.data.synth_stream.KeyframeStreamDataset`: ``stream_videos`` videos per epoch, ``stream_clips``
    keyframes each, default 2, in the data set's label map; ``negative_fraction``: the probability of a keyframe whose
    actors are all idle, :func:`stad.engine.families.common.negative_fraction`). The stream has no person proposals.
    """
    d = cfg.data
    stream = train_stream(d, clips_per_video=2, layout="ava")
    if stream is None:
        if "negative_fraction" in d.options:
            raise StadError("config key 'data.options.negative_fraction' sets the idle keyframes of the training stream; "
                            "it needs data.options.train_stream: true")
        rules = METHOD_DATA[cfg.model.name]
        return train_dataloader(cfg, _dataset(cfg, data, data.train, train=True, method=cfg.model.name), rules.collate)
    from stad.data.synth_stream import KeyframeStreamDataset

    if data.proposals.get("train") is not None:
        raise StadError("data.options.train_stream renders the training keyframes without person proposals; drop "
                        "data.options.proposals_train or train on the fixed data set")
    rules = METHOD_DATA[cfg.model.name]
    size = tuple(int(v) for v in d.input_size)
    dataset = KeyframeStreamDataset(
        stream.config, videos_per_epoch=stream.videos_per_epoch, keyframes_per_video=stream.clips_per_video,
        labelmap=data.labelmap, clip_rule=clip_rule(cfg, rules), input_size=size if rules.fixed_size else None,
        transform=_transform(cfg, rules, train=True), normalization=rules.normalization, seed=cfg.train.seed,
        negative_fraction=negative_fraction(d),
    )
    return train_dataloader(cfg, dataset, rules.collate, shuffle=False)


# ---------------------------------------------------------------------------------------------------
# Prediction and evaluation


@dataclass
class KeyframePredictions:
    """Actor predictions of the evaluated keyframes, one set of AVA rows per stage (STEP: steps 1..3; last = final).

    Attributes:
        stages: per stage, prediction rows (``video, timestamp, x1, y1, x2, y2`` normalised, ``action_id``, ``score``).
        keyframes: the number of keyframes run.
    """

    stages: list[AVARows]
    keyframes: int

    @property
    def final(self) -> AVARows:
        return self.stages[-1]


def detections_to_rows(
    keys: list[tuple[str, int]], per_clip: list[KeyframeDetections], labelmap: LabelMap
) -> AVARows:
    """AVA prediction rows of the detections of keyframes ``keys`` (boxes normalised, class -> action id)."""
    counts = [len(d) for d in per_clip]
    n = int(sum(counts))
    if n == 0:
        return AVARows.from_arrays(video=np.zeros(0, str), timestamp=np.zeros(0, np.int64), boxes=np.zeros((0, 4)),
                                   action_id=np.zeros(0, np.int64), score=np.zeros(0))
    ids = np.asarray(labelmap.ids, np.int64)
    return AVARows.from_arrays(
        video=np.repeat(np.asarray([k[0] for k in keys], dtype=str), counts),
        timestamp=np.repeat(np.asarray([k[1] for k in keys], np.int64), counts),
        boxes=np.concatenate([d.boxes for d in per_clip]).reshape(n, 4),
        action_id=ids[np.concatenate([d.labels for d in per_clip]).astype(np.int64)],
        score=np.concatenate([d.scores for d in per_clip]),
    )


def _concat_rows(parts: list[AVARows]) -> AVARows:
    parts = [p for p in parts if len(p)] or parts[:1]
    return AVARows.from_arrays(
        video=np.concatenate([p.video for p in parts]), timestamp=np.concatenate([p.timestamp for p in parts]),
        boxes=np.concatenate([p.boxes for p in parts]), action_id=np.concatenate([p.action_id for p in parts]),
        score=np.concatenate([p.score for p in parts]),
    )


def _detect_options(cfg: Config) -> dict[str, Any]:
    opts = cfg.eval.options
    check_options(opts, INFER_OPTIONS, "eval.options")
    return {k: opts[k] for k in ("conf_thresh", "nms_thresh", "top_n") if k in opts}


@torch.inference_mode()
def predict(
    model: torch.nn.Module, cfg: Config, data: KeyframeData, *, device: torch.device | str, progress: bool = True
) -> KeyframePredictions:
    """Run ``model.detect`` on every evaluated keyframe (batches of ``eval.batch_size``); under torchrun each process
    takes every ``world_size``-th keyframe and the rows are gathered on every process."""
    from stad.engine.distributed import all_gather_objects, get_rank, get_world_size

    rank, world = get_rank(), get_world_size()
    keyframes = data.eval_keyframes(cfg.eval.options.get("max_keyframes"))
    if not keyframes:
        raise StadError("no keyframe to evaluate (check data.options.first_timestamp / last_timestamp and the frames)")
    mine = keyframes[rank::world]
    model.eval()
    options = _detect_options(cfg)
    stages: list[list[AVARows]] = []
    if mine:
        dataset = _dataset(cfg, data, mine, train=False, method=cfg.model.name)
        loader = DataLoader(dataset, batch_size=cfg.eval.batch_size, shuffle=False, num_workers=cfg.data.num_workers,
                            collate_fn=METHOD_DATA[cfg.model.name].collate)
        for batch in tqdm(loader, desc="detect", unit="batch", disable=not progress or rank != 0, leave=False):
            keys = list(zip(batch["video"], [int(t) for t in batch["timestamp"]]))
            clip_batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
            per_stage = model.detect(clip_batch, **options)  # [stage][clip] KeyframeDetections
            if not stages:
                stages = [[] for _ in per_stage]
            for s, per_clip in enumerate(per_stage):
                stages[s].append(detections_to_rows(keys, per_clip, data.labelmap))
    local = [_concat_rows(parts) for parts in stages]
    if world > 1:
        gathered = [part for part in all_gather_objects(local) if part]
        local = [_concat_rows([g[s] for g in gathered]) for s in range(len(gathered[0]))]
    return KeyframePredictions(stages=local, keyframes=len(keyframes))


def evaluate(cfg: Config, data: KeyframeData, preds: KeyframePredictions) -> dict[str, Any]:
    """AVA frame-mAP@0.5 (official evaluator's rules, :func:`stad.eval.ava_map.ava_map`) of every stage.

    Returns ``frame_mAP`` (final stage) and, with several stages, ``frame_mAP/step<k>`` (fractions); ``actor_AP``,
    the class-agnostic AP of the final stage (:func:`stad.eval.ava_map.actor_ap`: are the actors found at all?);
    with actor visibility (synthetic data) ``frame_mAP/vis<lo>-<hi>``; the :class:`stad.eval.ava_map.AVAResult` of
    each stage under ``_ava`` (list, last = final).
    """
    from stad.eval.ava_map import actor_ap, ava_map, ava_map_by_visibility

    results = [ava_map(data.eval_gt, rows, data.labelmap, excluded=data.excluded) for rows in preds.stages]
    metrics: dict[str, Any] = {"frame_mAP": float(results[-1].mAP)}
    if len(results) > 1:
        metrics.update({f"frame_mAP/step{k}": float(r.mAP) for k, r in enumerate(results, start=1)})
    metrics["_ava"] = results
    metrics["actor_AP"] = float(actor_ap(data.eval_gt, preds.final, data.labelmap, excluded=data.excluded).mAP)
    if data.eval_visibility is not None:
        bands = ava_map_by_visibility(data.eval_gt, preds.final, data.labelmap, data.eval_visibility, excluded=data.excluded)
        metrics.update({f"frame_mAP/vis{band}": float(v["mAP"]) for band, v in bands.items()})
        metrics["_bands"] = bands
    return metrics


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.2f}"


def format_report(metrics: dict[str, Any]) -> str:
    """Markdown: per-class AP of the final stage and, with several stages, the mAP after each."""
    results = metrics["_ava"]
    final = results[-1]
    lines = ["| class | GT | detections | AP % |", "|---|---:|---:|---:|"]
    for name, gt, dets, ap in zip(final.class_names, final.num_gt.tolist(), final.num_detections.tolist(), final.ap.tolist()):
        lines.append(f"| {name} | {gt} | {dets} | {_percent(ap)} |")
    lines.append(f"| **frame-mAP@0.5** | | | **{100 * final.mAP:.2f}** |")
    if "actor_AP" in metrics:
        lines.append(f"| actor AP (class-agnostic) | | | {_percent(metrics['actor_AP'])} |")
    text = "\n".join(lines) + "\n"
    if len(results) > 1:
        text += "\n| step | frame-mAP@0.5 % |\n|---|---:|\n" + "".join(
            f"| {k} | {100 * r.mAP:.2f} |\n" for k, r in enumerate(results, start=1))
    if "_bands" in metrics:
        text += "\n| actor visibility | GT rows | frame-mAP@0.5 % |\n|---|---:|---:|\n" + "".join(
            f"| {band} | {v['n_gt']} | {_percent(v['mAP'])} |\n"
            for band, v in metrics["_bands"].items())
    return text


def write_predictions(preds: KeyframePredictions, out: Path) -> list[Path]:
    """``predictions.csv`` (final stage) and, with several stages, ``predictions_step<k>.csv``, in the AVA prediction
    format that ``stad eval ava`` reads (scores with 4 significant digits, as STEP writes them)."""
    from stad.data.ava import write_ava_predictions

    paths = [out / "predictions.csv"]
    write_ava_predictions(paths[0], preds.final)
    if len(preds.stages) > 1:
        for k, rows in enumerate(preds.stages, start=1):
            paths.append(out / f"predictions_step{k}.csv")
            write_ava_predictions(paths[-1], rows)
    return paths


def test(
    cfg: Config, checkpoint: str | Path, out_dir: str | Path, *, device: str | None = None, progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Run a keyframe ``checkpoint`` on every keyframe of the evaluated videos; write the AVA prediction CSVs and
    ``report.json`` / ``report.md`` (per-class AP, mAP, mAP after each step); returns the metrics."""
    import json

    from stad.engine.train import resolve_device
    from stad.eval.report import json_clean

    if options.get("flow_checkpoint") or options.get("fusion_weights") is not None:
        raise StadError(f"{checkpoint}: two-stream fusion (--flow-checkpoint) is for tubelet models (moc, stado)")
    dev = resolve_device(device or cfg.train.device)
    model, ckpt_cfg = load_detector(checkpoint, device=dev)
    data = load_data(cfg, progress=progress)
    check_checkpoint_labels(checkpoint, ckpt_cfg, data.labels)
    cfg = replace(cfg, model=ckpt_cfg.model, data=replace(cfg.data, input_size=ckpt_cfg.data.input_size))
    preds = predict(model, cfg, data, device=dev, progress=progress)
    metrics = evaluate(cfg, data, preds)
    out = output_dir(out_dir)
    files = write_predictions(preds, out)
    results = metrics["_ava"]
    report = {
        "checkpoint": str(checkpoint),
        "model": ckpt_cfg.model.name,
        "subset": cfg.eval.subset,
        "keyframes": preds.keyframes,
        "data": data.source,
        "predictions": [p.name for p in files],
        "ava_map": results[-1].to_dict(),
        **({"steps": [r.to_dict() for r in results]} if len(results) > 1 else {}),
        **({"visibility_bands": metrics["_bands"]} if "_bands" in metrics else {}),
        "metrics": {k: v for k, v in metrics.items() if not k.startswith("_")},
    }
    (out / "report.json").write_text(json.dumps(json_clean(report), indent=2, allow_nan=False))
    (out / "report.md").write_text(format_report(metrics))
    return metrics



# ---------------------------------------------------------------------------------------------------
# Detection on a user's video (STEP's demo)


@dataclass
class KeyframeDetectResult:
    """Output of :func:`detect_source`: the rows of every keyframe and the files written."""

    rows: AVARows
    keyframes: list[int]
    video: Path
    predictions_csv: Path


def _group_actors(dets: KeyframeDetections) -> list[tuple[np.ndarray, list[tuple[int, float]]]]:
    """Rows of one keyframe grouped by box (a STEP tubelet gives one box to all its classes): ``(box, [(label,
    score) best first])`` per actor, actors by their best score."""
    groups: dict[tuple[float, ...], list[tuple[int, float]]] = {}
    for box, label, score in zip(dets.boxes, dets.labels.tolist(), dets.scores.tolist()):
        groups.setdefault(tuple(np.round(box, 6).tolist()), []).append((int(label), float(score)))
    out = [(np.asarray(box), sorted(members, key=lambda m: -m[1])) for box, members in groups.items()]
    return sorted(out, key=lambda g: -g[1][0][1])


@torch.inference_mode()
def detect_source(
    model: torch.nn.Module,
    cfg: Config,
    source: str | Path,
    out_dir: str | Path,
    *,
    device: torch.device | str,
    fps: float | None = None,
    conf_thresh: float = 0.4,
    top_actions: int = 3,
    batch_size: int = 4,
) -> KeyframeDetectResult:
    """Detect actors and their actions at 1 Hz keyframes of a video file or frame folder (STEP's demo).

    Every second's first frame is a keyframe; its clip is the method's (STEP: 36 frames at 12 fps around it, the
    edge rule of :func:`stad.data.keyframes.step_clip_frames` at the video's ends), resized and normalised as in
    testing. Detections above ``conf_thresh`` (STEP's demo: 0.4) of the final stage are grouped by box into actors.
    Writes ``<name>_actions.mp4`` (each keyframe's actors with their ``top_actions`` best actions, held for that
    second) and ``<name>_predictions.csv`` (AVA prediction rows ``video,timestamp,x1,y1,x2,y2,action_id,score``,
    boxes normalised; action ids of the model's label map, or class index + 1 when it has none).

    Args:
        fps: the frame rate of ``source`` (default: the video's; 30 for a frame folder, as AVA's extraction).
    """
    from stad.data.ava import write_ava_predictions
    from stad.data.keyframes import normalize_pixels, step_clip_frames
    from stad.data.transforms import ClipSample
    from stad.engine.infer import read_source
    from stad.viz.draw import TubeOverlay, draw_tubes
    from stad.viz.video import write_video

    if cfg.model.name not in METHOD_DATA:
        raise StadError(f"model.name={cfg.model.name!r} is not a keyframe model ({', '.join(sorted(METHOD_DATA))})")
    if cfg.model.name not in ("step", "step_cls"):
        raise StadError(f"{cfg.model.name} classifies given person boxes; `stad detect` runs STEP only. Score a data "
                        "set with person proposals instead: `stad test CONFIG data.options.proposals_val=FILE`")
    frames, source_fps = read_source(source)
    if Path(source).is_dir() and fps is None:
        source_fps = 30.0
    fps = float(fps or source_fps)
    name = Path(source).stem if Path(source).is_file() else Path(source).name
    T, H, W = frames.shape[:3]  # noqa: N806
    seconds, first_frames, counts = second_index(T, fps)
    rules = METHOD_DATA[cfg.model.name]
    size = tuple(int(v) for v in cfg.data.input_size)
    transform = rules.test_transform(size)
    labels = list(cfg.model.labels) or [str(i) for i in range(cfg.model.num_classes)]
    ids = np.asarray(cfg.model.label_ids or range(1, len(labels) + 1), np.int64)
    model.eval()
    per_second: list[KeyframeDetections] = []
    for start in range(0, len(seconds), batch_size):
        clips = []
        for s in seconds[start : start + batch_size].tolist():
            numbers = step_clip_frames(s, seconds, first_frames, counts, before=rules.clip_rule.before,
                                       after=rules.clip_rule.after, video=name)
            sample = transform(ClipSample.create(frames[numbers - 1], np.zeros((0, 4))), np.random.default_rng(0))
            clips.append(normalize_pixels(sample.clip, rules.normalization))
        batch = {"clip": torch.stack(clips).to(device)}
        per_second.extend(model.detect(batch, conf_thresh=conf_thresh)[-1])
    overlays, rows = [], []
    for s, first, count, dets in zip(seconds.tolist(), first_frames.tolist(), counts.tolist(), per_second):
        for rank, (box, members) in enumerate(_group_actors(dets)):
            pixels = box * np.array([W, H, W, H])
            span = np.arange(first, first + count)
            overlays.append(TubeOverlay(
                identity=rank, boxes=np.column_stack([span, np.tile(pixels, (len(span), 1))]),
                text=", ".join(f"{labels[c]} {p:.2f}" for c, p in members[:top_actions])))
        rows.append(dets)
    out = output_dir(out_dir)
    scale = max(1, int(round(480 / max(H, W))))
    video = write_video(out / f"{name}_actions.mp4", draw_tubes(frames, overlays, scale=scale, trail=0), fps=int(round(fps)) or 25)
    table = AVARows.from_arrays(
        video=np.repeat(np.asarray([name], dtype=str), sum(len(d) for d in rows)),
        timestamp=np.repeat(seconds, [len(d) for d in rows]),
        boxes=np.concatenate([d.boxes for d in rows]) if rows else np.zeros((0, 4)),
        action_id=ids[np.concatenate([d.labels for d in rows]).astype(np.int64)] if rows else np.zeros(0, np.int64),
        score=np.concatenate([d.scores for d in rows]) if rows else np.zeros(0),
    )
    csv_path = out / f"{name}_predictions.csv"
    write_ava_predictions(csv_path, table)
    return KeyframeDetectResult(rows=table, keyframes=seconds.tolist(), video=video, predictions_csv=csv_path)


FAMILY = Family(
    name="keyframe",
    models=tuple(METHOD_DATA),
    load_data=load_data,
    resolve_model_config=resolve_model_config,
    build_train_loader=build_train_loader,
    predict=predict,
    evaluate=evaluate,
    test=test,
    format_report=format_report,
)
