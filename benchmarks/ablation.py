"""Ablation runner: train and test several variants of a config under the same budget, then tabulate.

A spec (YAML, under ``benchmarks/ablations/``) names the variants; every variant is a config plus ``key=value``
overrides, trained with ``stad train`` into ``OUT/<name>`` and tested with ``stad test`` into ``OUT/<name>/test``.
A variant with ``train: false`` reuses another variant's checkpoint (e.g. a test-time switch or late fusion)::

    title: STADO ablation, occluded synthetic preset
    common: [train.epochs=6]                 # overrides of every variant (same budget, same seed)
    variants:
      - name: moc
        config: configs/moc_r18w025_synth_occluded.yaml
      - name: stado
        config: configs/stado_r18w025_synth_occluded.yaml
        overrides: [model.options.mask_weight=1.0]
      - name: fused
        config: configs/stado_r18w025_synth_occluded.yaml
        train: false
        checkpoint: "{out}/stado/last.pt"
        test_args: ["--flow-checkpoint", "{out}/flow/last.pt"]

Every step is skipped when its output exists (``OUT/<name>/timing.json`` after training, ``test/report.json``
after testing), so an interrupted ablation resumes where it stopped; a variant whose training was interrupted
resumes from its ``last.pt``. The table (``OUT/table.md``, also printed) has one row per variant: the training
time (wall and child CPU seconds) and every metric of ``report.json["metrics"]`` in percent.

The ``--set`` overrides are stored in ``OUT/set.json``: a resumed run reuses them, a different ``--set`` is an error.

Usage::

    .venv/bin/python benchmarks/ablation.py benchmarks/ablations/stado.yaml --out runs/ablation_stado
    .venv/bin/python benchmarks/ablation.py SPEC --out DIR --only moc stado --set train.epochs=1   # quick check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

STAD = [sys.executable, "-m", "stad.cli"]
SPEC_KEYS = {"title", "common", "variants"}
VARIANT_KEYS = {"name", "config", "overrides", "train", "checkpoint", "test_args"}


@dataclass
class Variant:
    name: str
    config: str
    overrides: list[str] = field(default_factory=list)
    train: bool = True
    checkpoint: str | None = None
    test_args: list[str] = field(default_factory=list)


@dataclass
class Spec:
    title: str
    common: list[str]
    variants: list[Variant]


def load_spec(path: Path) -> Spec:
    """Read and check an ablation spec; errors name the file and the offending entry."""
    raw = yaml.safe_load(path.read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("variants"), list) or not raw["variants"]:
        raise SystemExit(f"{path}: expected a mapping with a non-empty 'variants' list")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise SystemExit(f"{path}: unknown key(s) {sorted(unknown)}; valid: {sorted(SPEC_KEYS)}")
    variants = []
    for i, entry in enumerate(raw["variants"]):
        where = f"{path}: variants[{i}]"
        if not isinstance(entry, dict) or "name" not in entry or "config" not in entry:
            raise SystemExit(f"{where}: each variant needs 'name' and 'config'")
        unknown = set(entry) - VARIANT_KEYS
        if unknown:
            raise SystemExit(f"{where} ({entry['name']}): unknown key(s) {sorted(unknown)}; valid: {sorted(VARIANT_KEYS)}")
        variant = Variant(**{k: entry[k] for k in entry})
        if not variant.train and not variant.checkpoint:
            raise SystemExit(f"{where} ({variant.name}): a variant with train: false needs 'checkpoint'")
        variants.append(variant)
    names = [v.name for v in variants]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SystemExit(f"{path}: duplicate variant name(s) {duplicated}")
    return Spec(str(raw.get("title", path.stem)), [str(o) for o in raw.get("common") or []], variants)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(cmd: list[str], log: Path) -> tuple[float, float]:
    """Run ``cmd`` with its output appended to ``log``; returns (wall, CPU) seconds; exits on failure."""
    print("$", shlex.join(cmd), flush=True)
    wall, cpu = time.perf_counter(), _children_cpu()
    with log.open("a") as handle:
        code = subprocess.call(cmd, stdout=handle, stderr=subprocess.STDOUT)
    wall, cpu = time.perf_counter() - wall, _children_cpu() - cpu
    if code != 0:
        raise SystemExit(f"command failed with exit code {code} (see {log}): {shlex.join(cmd)}")
    return wall, cpu


def run_variant(variant: Variant, spec: Spec, out: Path, extra: list[str]) -> None:
    run_dir = out / variant.name
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "ablation.log"
    overrides = [*spec.common, *variant.overrides, *extra, f"train.output_dir={run_dir}"]
    timing_file = run_dir / "timing.json"
    if variant.train and not timing_file.exists():
        resume = ["--resume", str(run_dir / "last.pt")] if (run_dir / "last.pt").exists() else []
        wall, cpu = _run([*STAD, "train", variant.config, *overrides, *resume], log)
        timing_file.write_text(json.dumps({"train_wall_s": wall, "train_cpu_s": cpu, "resumed": bool(resume)}))
    report = run_dir / "test" / "report.json"
    if not report.exists():
        checkpoint = (variant.checkpoint or "{run}/last.pt").format(out=out, run=run_dir)
        test_args = [a.format(out=out, run=run_dir) for a in variant.test_args]
        _run([*STAD, "test", variant.config, *overrides, "--checkpoint", checkpoint, "--out", str(run_dir / "test"), *test_args], log)


def _percent(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{100 * float(value):.2f}"


def table(spec: Spec, out: Path, extra: list[str] = ()) -> str:
    """Markdown table of every variant with a report (metrics in percent); ``extra`` = the ``--set`` overrides."""
    rows, keys = [], []
    for variant in spec.variants:
        report = out / variant.name / "test" / "report.json"
        if not report.exists():
            continue
        metrics = json.loads(report.read_text())["metrics"]
        keys += [k for k in metrics if k not in keys]
        timing_file = out / variant.name / "timing.json"
        timing = json.loads(timing_file.read_text()) if timing_file.exists() else {}
        rows.append((variant, metrics, timing))
    head = ["variant", "overrides", "train wall / CPU (min)", *keys]
    settings = " ".join([*spec.common, *extra]) or "none"
    lines = [f"**{spec.title}** (overrides of every variant: `{settings}`)", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for variant, metrics, timing in rows:
        train = (f"{timing['train_wall_s'] / 60:.1f} / {timing['train_cpu_s'] / 60:.1f}" if timing
                 else f"(test only: `{variant.checkpoint}`)")
        overrides = " ".join([*variant.overrides, *variant.test_args]) or "-"
        cells = [variant.name, f"`{overrides}`", train, *(_percent(metrics.get(k)) for k in keys)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("spec", type=Path, help="ablation spec YAML (benchmarks/ablations/*.yaml)")
    parser.add_argument("--out", type=Path, required=True, help="output folder, one sub-folder per variant")
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these variants (the table shows all done)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides for every variant")
    parser.add_argument("--table-only", action="store_true", help="print the table of what is done, run nothing")
    args = parser.parse_args(argv)
    spec = load_spec(args.spec)
    names = {v.name for v in spec.variants}
    if args.only and not set(args.only) <= names:
        raise SystemExit(f"--only: unknown variant(s) {sorted(set(args.only) - names)}; spec has {sorted(names)}")
    args.out.mkdir(parents=True, exist_ok=True)
    stored = args.out / "set.json"  # the --set overrides the runs in OUT were made with (resuming reuses them)
    extra = json.loads(stored.read_text()) if stored.exists() else list(args.set)
    if args.set and args.set != extra:
        raise SystemExit(f"{args.out} holds runs made with --set {extra}, not {args.set}; use another --out")
    if not args.table_only and not stored.exists():
        stored.write_text(json.dumps(extra))
    if not args.table_only:
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        for variant in spec.variants:
            if not args.only or variant.name in args.only:
                run_variant(variant, spec, args.out, list(extra))
    text = table(spec, args.out, extra)
    (args.out / "table.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
