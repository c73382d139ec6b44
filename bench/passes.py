"""Benchmark: cost of odimo's passes + verification relative to a plain ONNX round trip.

Prints (order + reorder + split + QDQ + annotate + verification) / (onnx load + check + save) for a
ResNet-18-size model (CIFAR stem, 11.2 M parameters) under a random DIANA mapping, measured in one
run. Goal: <= 3x. Not a test: `python bench/passes.py`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from odimo.compiler.importer import load_model
from odimo.compiler.partition import partition
from odimo.compiler.search_stage import initial_substitutes
from odimo.ir.assignment import Assignment
from odimo.ir.verify import compare, probe_inputs
from odimo.models.export import export_onnx
from odimo.targets import get_target
from odimo.targets.base import Role
from odimo.targets.plan import Policy, plan_for_target


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = (
            nn.Sequential()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.short(x))


def resnet18(num_classes: int = 100) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU()]
    c = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(c, width, stride), BasicBlock(width, width, 1)]
        c = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return nn.Sequential(*layers).eval()


def random_mapping(plan, seed: int = 0) -> Assignment:
    rng = np.random.default_rng(seed)
    layers = {}
    for layer in plan.searchable:
        c = layer.layer.geometry.c_out
        if layer.policy is Policy.FREE:
            layers[layer.name] = tuple(rng.choice(plan.target.cus, c))
        else:
            k = int(rng.integers(0, c + 1))
            layers[layer.name] = ("digital",) * k + ("analog",) * (c - k)
    return Assignment(plan.target.name, layers)


def main() -> None:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "resnet18.onnx"
        export_onnx(resnet18(), path, (3, 32, 32))
        start = time.perf_counter()
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(Path(tmp) / "copy.onnx"))
        baseline = time.perf_counter() - start

        imported = load_model(path)
        target = get_target("diana")
        plan = plan_for_target(imported.model, target)
        mapping = random_mapping(plan)
        full = {
            **mapping.layers,
            **{
                p.name: (p.support.cus[0],) * p.layer.geometry.c_out
                for p in plan.layers
                if p.support.role is Role.FIXED
            },
        }
        mapping = Assignment(target.name, full)
        start = time.perf_counter()
        emitted = partition(imported.model, plan, mapping, "qdq", initial_substitutes(imported.model, plan, mapping))
        passes = time.perf_counter() - start
        start = time.perf_counter()
        probes = probe_inputs(imported.model, 0)
        result = compare(emitted.reference, emitted.partitioned, probes)
        compare(emitted.partitioned, emitted.qdq, probes)
        verify = time.perf_counter() - start
    params = sum(p.numel() for p in resnet18().parameters()) / 1e6
    print(f"ResNet-18 ({params:.1f} M params), random DIANA mapping, max |dy| = {result.max_abs_diff:.2g}")
    print(f"onnx load+check+save: {baseline:.3f} s; passes: {passes:.3f} s; verification: {verify:.3f} s")
    print(f"(passes + verification) / (load + check + save) = {(passes + verify) / baseline:.2f}x (goal <= 3x)")


if __name__ == "__main__":
    main()
