"""stad.config: YAML loading, typed overrides, clear errors, save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from stad.config import (
    Config,
    DataConfig,
    ModelConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    save_config,
)
from stad.errors import StadError

MOC_YAML = """\
data:
  kind: act
  root: data/ucf24/rgb-images
  gt_file: data/ucf24/UCF101v2-GT.pkl
  input_size: [288, 288]
  K: 7
  batch_size: 16
model:
  name: moc
  backbone: dla34
  num_classes: 24
  options:
    head_conv: 256
    loss_weights: {hm: 1.0, mov: 1.0, wh: 0.1}
train:
  epochs: 12
  lr: 5.0e-4
  scheduler: step
  milestones: [6, 8]
  amp: bf16
"""


def _write(tmp_path: Path, text: str, name: str = "run.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_load_reads_sections_and_keeps_defaults(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, MOC_YAML))
    assert cfg.data.input_size == (288, 288)
    assert cfg.data.batch_size == 16
    assert cfg.data.split == 1  # default kept
    assert cfg.model.backbone == "dla34"
    assert cfg.model.options == {"head_conv": 256, "loss_weights": {"hm": 1.0, "mov": 1.0, "wh": 0.1}}
    assert cfg.train.milestones == [6, 8]
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.train.amp == "bf16"
    assert cfg.eval == Config().eval


def test_empty_file_gives_defaults(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, "")) == Config()


def test_overrides_are_parsed_as_yaml_and_typed(tmp_path: Path) -> None:
    cfg = load_config(
        _write(tmp_path, MOC_YAML),
        [
            "train.lr=1e-3",  # YAML 1.1 reads this as a string; float fields accept it
            "train.epochs=3",
            "train.grad_clip=10",  # int for a float | None field
            "train.resume=runs/x/last.pt",
            "data.input_size=[64, 96]",
            "data.augment=false",
            "model.options.head_conv=64",
            "model.options.loss_weights.wh=0.2",
            "model.options.new.deep=[1, 2]",
            "eval.video_ious=[0.2, 0.5]",
        ],
    )
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 3
    assert cfg.train.grad_clip == 10.0 and isinstance(cfg.train.grad_clip, float)
    assert cfg.train.resume == "runs/x/last.pt"
    assert cfg.data.input_size == (64, 96)
    assert cfg.data.augment is False
    assert cfg.model.options["head_conv"] == 64
    assert cfg.model.options["loss_weights"] == {"hm": 1.0, "mov": 1.0, "wh": 0.2}
    assert cfg.model.options["new"] == {"deep": [1, 2]}
    assert cfg.eval.video_ious == [0.2, 0.5]


def test_later_override_wins_and_null_clears_optional() -> None:
    cfg = apply_overrides(Config(), ["train.best_metric=video_map", "train.best_metric=frame_map",
                                     "model.weights=null"])
    assert cfg.train.best_metric == "frame_map"
    assert cfg.model.weights is None


def test_unknown_key_in_file_names_file_key_and_valid_keys(tmp_path: Path) -> None:
    path = _write(tmp_path, "train:\n  lr: 0.1\n  epoch: 3\n")
    with pytest.raises(StadError, match=r"run\.yaml: unknown config key 'train\.epoch' under 'train'; valid keys: epochs, optimizer"):
        load_config(path)
    with pytest.raises(StadError, match=r"unknown config key 'trian'; valid keys: data, model, train, eval"):
        load_config(_write(tmp_path, "trian: {}\n", "b.yaml"))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrate=0.1", r"unknown config key 'train\.lrate' under 'train'; valid keys: epochs, .*resume \(in override"),
        ("dataset.root=x", r"unknown config key 'dataset'; valid keys: data, model, train, eval"),
        ("train.epochs=1.5", r"'train\.epochs': expected int, got 1\.5 \(float\)"),
        ("train.epochs=true", r"'train\.epochs': expected int, got True \(bool\)"),
        ("train.lr=fast", r"'train\.lr': expected float, got 'fast' \(str\)"),
        ("train.amp=fp32", r"'train\.amp': expected one of 'none', 'bf16', 'fp16', got 'fp32'"),
        ("train.optimizer=Adam", r"'train\.optimizer': expected one of 'adamw', 'adam', 'sgd', got 'Adam'"),
        ("data.input_size=[1, 2, 3]", r"'data\.input_size': expected 2 values, got \[1, 2, 3\]"),
        ("data.input_size=[64, x]", r"'data\.input_size\[1\]': expected int, got 'x'"),
        ("data.root=5", r"'data\.root': expected str, got 5 \(int\)"),
        ("train.epochs=null", r"'train\.epochs': expected int, got None"),
        ("train.milestones=3", r"'train\.milestones': expected list\[int\], got 3"),
        ("train.lr.value=3", r"'train\.lr' has no sub-keys"),
        ("train.lr", r"must look like 'section\.key=value'"),
        ("train.lr=[1", r"value is not valid YAML"),
    ],
)
def test_bad_overrides_raise_naming_key_and_value(override: str, message: str) -> None:
    with pytest.raises(StadError, match=message):
        apply_overrides(Config(), [override])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=0", r"'train\.epochs' must be >= 1, got 0"),
        ("train.milestones=[8, 6]", r"'train\.milestones' must be increasing"),
        ("train.grad_clip=0", r"'train\.grad_clip' must be > 0 or null"),
        ("data.batch_size=0", r"'data\.batch_size' must be >= 1"),
        ("eval.frame_iou=1.5", r"'eval\.frame_iou' must be in \(0, 1\]"),
    ],
)
def test_out_of_range_values_raise(override: str, message: str) -> None:
    with pytest.raises(StadError, match=message):
        apply_overrides(Config(), [override])


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(StadError, match=r"bad\.yaml: not valid YAML"):
        load_config(_write(tmp_path, "train: [1,\n", "bad.yaml"))
    with pytest.raises(StadError, match=r"list\.yaml: a config must be a mapping of sections, got list"):
        load_config(_write(tmp_path, "- 1\n- 2\n", "list.yaml"))
    with pytest.raises(StadError, match=r"sec\.yaml: config key 'train': expected TrainConfig, got 3"):
        load_config(_write(tmp_path, "train: 3\n", "sec.yaml"))


def test_save_load_round_trip(tmp_path: Path) -> None:
    cfg = Config(
        data=DataConfig(kind="synthetic", root="/data/frames", input_size=(64, 80), K=3, augment=False,
                        options={"stream": "flow", "flow_frames": 5}),
        model=ModelConfig(name="stado", backbone="resnet18", num_classes=7, weights="w.pth",
                          options={"mask": {"enabled": True, "weight": 0.5}, "levels": [1, 2]}),
        train=TrainConfig(epochs=3, optimizer="sgd", lr=0.01, scheduler="cosine", warmup_iters=5,
                          milestones=[1, 2], grad_clip=2.5, amp="bf16", best_metric="frame_map",
                          best_mode="max", resume=None, output_dir="runs/a"),
    )
    path = save_config(cfg, tmp_path / "nested" / "config.yaml")
    assert path.is_file()
    loaded = load_config(path)
    assert loaded == cfg
    assert config_to_dict(loaded) == config_to_dict(cfg)
    assert save_config(loaded, tmp_path / "again.yaml").read_text() == path.read_text()


def test_config_to_dict_is_plain_and_round_trips() -> None:
    values = config_to_dict(Config())
    assert values["data"]["input_size"] == [288, 288]  # tuples become lists (YAML-safe)
    assert config_from_dict(values) == Config()
