"""Train the toy regressor with stad.engine.fit, alone or under torchrun (used by test_ddp.py).

    python tests/engine/ddp_toy_train.py --out DIR --batch-size 8
    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/engine/ddp_toy_train.py --out DIR --batch-size 4

Both write DIR/last.pt; with the same global batch they must reach the same weights.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))  # engine_toy beside this script

from engine_toy import ToyDataset, ToyRegressor, evaluate_mse  # noqa: E402

from stad.config import TrainConfig  # noqa: E402
from stad.engine.distributed import build_sampler, cleanup, init_distributed  # noqa: E402
from stad.engine.train import fit, seed_everything  # noqa: E402


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--batch-size", type=int, required=True, help="clips per process")
    parser.add_argument("--epochs", type=int, default=2)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    info = init_distributed()
    try:
        seed_everything(0)
        model = ToyRegressor()
        train_set, val_set = ToyDataset(32, seed=1), ToyDataset(16, seed=2)
        train_loader = DataLoader(train_set, batch_size=args.batch_size,
                                  sampler=build_sampler(train_set, shuffle=True, seed=3))
        val_loader = DataLoader(val_set, batch_size=4, sampler=build_sampler(val_set, shuffle=False))
        cfg = TrainConfig(
            epochs=args.epochs, optimizer="sgd", lr=0.05, momentum=0.9, scheduler="step", milestones=[1],
            gamma=0.5, output_dir=args.out, best_metric="val_mse", best_mode="min", log_every=1, seed=0,
        )
        result = fit(model, train_loader, cfg=cfg, device="cpu", evaluate=evaluate_mse, val_loader=val_loader)
        if info.rank == 0:
            print(f"world_size={info.world_size} val_mse={result.history[-1]['val']['val_mse']:.6f}")
    finally:
        cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
