"""Benchmark: what the contiguous-group constraint costs in accuracy (method.md §7.2).

Runs the same DIANA search on ResNet-20 (the bundled Fashion-MNIST model) twice, with contiguous
groups searched as per-CU prefixes (what odimo emits) and with every layer searched per channel (the
reference, which needs Gather re-permutations to deploy), same data, seed, λ and epochs; prints test
accuracy and predicted cycles of both. Not a test: `python bench/contiguity_cost.py [--epochs 0,2,1]`.
"""

from __future__ import annotations

import argparse
import time

import torch

from odimo.compiler.importer import load_model
from odimo.retrain.data import split_train_val
from odimo.retrain.run import load_data
from odimo.retrain.settings import SearchSettings
from odimo.retrain.supernet import Supernet
from odimo.retrain.trainer import evaluate, train
from odimo.targets import get_target
from odimo.targets.costing import cost_table
from odimo.targets.mapping import validate_mapping
from odimo.targets.plan import plan_for_target


def run(constrained: bool, args: argparse.Namespace) -> tuple[float, float, float]:
    imported = load_model(args.model)
    plan = plan_for_target(imported.model, get_target("diana"))
    settings = SearchSettings(data=args.data, seed=args.seed)
    dataset = load_data(imported, settings)
    torch.manual_seed(args.seed)
    supernet = Supernet(imported.model, plan, constrained=constrained)
    config = SearchSettings(
        epochs=tuple(int(v) for v in args.epochs.split(",")),
        lam=args.lam,
        seed=args.seed,
        limit_batches=args.limit_batches,
        progress=False,
    )
    started = time.perf_counter()
    result = train(supernet, split_train_val(dataset, seed=args.seed), config)
    accuracy = evaluate(supernet, dataset.x_test, dataset.y_test)
    full = validate_mapping(result.mapping, plan.analysis.geometries, plan.target)
    cycles = cost_table(plan.analysis.geometries, plan.target, full).total.cycles
    return accuracy, cycles, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/resnet20_fmnist.onnx")
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--epochs", default="0,2,1")
    parser.add_argument("--lam", type=float, default=1e-7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit-batches", type=int)
    args = parser.parse_args()
    results = {
        name: run(flag, args)
        for name, flag in (
            ("contiguous groups as prefixes (emitted)", True),
            ("every layer per channel (reference)", False),
        )
    }
    for name, (acc, cycles, seconds) in results.items():
        print(f"{name:<42} test acc {acc:.2%}  {cycles:>12,.1f} cycles  ({seconds:.0f} s)")
    (a, c, _), (b, d, _) = results.values()
    print(f"accuracy difference (constrained - free): {100 * (a - b):+.2f} points; cycles ratio {c / d:.3f}")


if __name__ == "__main__":
    main()
