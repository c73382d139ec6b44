"""Benchmark: cross-check odimo's DIANA digital-CU latency model against ZigZag (paper Table III).

Why: the paper validates its analytical cost models by the rank correlation of modelled vs measured
per-layer cycles (Table III, DIANA digital: error 42 %, Pearson 88 %, Spearman 95 %). Without the
chip, an independent cost model is the next best check: what ranking matters to the search, and
does odimo's formula (targets.md §3) rank the layers as a loop-nest/memory model does?

What: builds DIANA's digital CU as a ZigZag accelerator, costs every Conv/Gemm layer of the bundled
ResNet-20 (22 layers, input 1x32x32) with ZigZag's latency-optimal temporal mapping, and compares
with odimo's All-8bit per-layer digital cycles: per-layer table, then Spearman, Pearson and the mean
absolute percentage error of odimo taking ZigZag as the reference (|odimo - zigzag| / zigzag).
`python bench/zigzag_crosscheck.py [--json PATH]`; needs `pip install zigzag-dse six` (zigzag-dse
3.9.1 imports `six` without declaring it). Ranks are computed with numpy (ties averaged).

Reading the result: with the same spatial unrolling, ZigZag's ideal temporal cycles equal odimo's
`comp` term layer for layer, so what this checks is odimo's `ldst` term (activations moved at
8 B a cycle, not overlapped with compute) against ZigZag's stalls and on/off-loading.

Assumptions (also written to the JSON, see ASSUMPTIONS): a 16x16 MAC array unrolling 16 output
channels (K) x 16 output columns (OX), as odimo's formula does; 8-bit weights and activations,
32-bit partial sums; one 8-bit weight register per PE row, one 8-bit input register per PE column,
one 32-bit accumulator per PE; a 64 kB weight memory and the 256 kB shared L1 (activations) as the
top levels, each with a 128-bit read and a 128-bit write port; no L2/DMA traffic; Linear costed as
a 1x1 conv on a 1x1 map; latency only (memory access energies are not modelled).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from odimo.compiler.importer import load_model
from odimo.ir.geometry import LayerGeometry
from odimo.targets import get_target
from odimo.targets.baselines import build_baseline
from odimo.targets.costing import cost_table
from odimo.targets.plan import plan_for_target

ROOT = Path(__file__).resolve().parents[1]
PIP = f"{sys.executable} -m pip install zigzag-dse six"
PE_ROWS = PE_COLS = 16
PORT_BITS = 128
PSUM_BITS = 32
ASSUMPTIONS = [
    (
        "operational array 16x16 MACs, spatial unrolling D1 = K (output channels) 16, D2 = OX 16 "
        "(odimo's ceil16(C)·ceil16(OX)); ZigZag clips an unrolling to the layer size (OX 8, OX 1, K 10)"
    ),
    "operands W 8 bit, I 8 bit, partial sums 32 bit, outputs 8 bit",
    (
        "registers: one 8-bit weight register per PE row (broadcast over OX), one 8-bit input register "
        "per PE column (broadcast over K), one 32-bit accumulator per PE"
    ),
    (
        "top levels: 64 kB weight memory (W) and 256 kB shared L1 (I, O), each with one 128-bit read "
        "and one 128-bit write port (16 operands a cycle); odimo's ldst term assumes 8 B a cycle"
    ),
    "layer data start in these top levels: no L2/DMA traffic, no inter-layer overlap",
    (
        "ZigZag latency = latency_total2 (temporal cycles + stalls + on/off-loading) of the "
        "latency-optimal LOMA temporal mapping (lpf_limit 6)"
    ),
    (
        "workload from odimo's geometry: Conv as O[k][oy][ox] += W[k][c][fy][fx]·I[c][iy][ix] with "
        "ix = stride·ox + fx (input sized as the padded map), Linear as a 1x1 conv on a 1x1 map"
    ),
    "odimo cycles: the All-8bit baseline (every layer wholly on the digital CU), targets.md §3",
    "mape = mean |odimo - zigzag| / zigzag (ZigZag as the reference); spearman, pearson, mape are fractions",
]


@dataclass(frozen=True)
class Row:
    name: str
    odimo_cycles: float
    zigzag_cycles: float


def odimo_layers(model: Path) -> list[tuple[LayerGeometry, float]]:
    """Each costed layer with its All-8bit digital cycles, in model order."""
    target = get_target("diana")
    plan = plan_for_target(load_model(model).model, target)
    layers = plan.analysis.geometries
    table = cost_table(layers, target, build_baseline("All-8bit", layers, target).mapping)
    return [(layer, row.cycles["digital"]) for layer, row in zip(layers, table.layers)]


def _port(name: str, kind: str, bits: int, allocation: list[str]) -> dict[str, Any]:
    return {"name": name, "type": kind, "bandwidth_min": bits, "bandwidth_max": bits, "allocation": allocation}


def _memory(size_bits: int, operands: list[str], served: list[str], ports: list[dict[str, Any]]) -> dict[str, Any]:
    """A memory with zero access energy and area: this benchmark compares latency only."""
    return {
        "size": size_bits,
        "r_cost": 0.0,
        "w_cost": 0.0,
        "area": 0.0,
        "latency": 1,
        "operands": operands,
        "ports": ports,
        "served_dimensions": served,
    }


def _rw_memory(
    size_bits: int, bits: int, operands: list[str], served: list[str], reads: list[str], writes: list[str]
) -> dict[str, Any]:
    """A memory with one read and one write port of `bits` a cycle."""
    ports = [_port("r_port_1", "read", bits, reads), _port("w_port_1", "write", bits, writes)]
    return _memory(size_bits, operands, served, ports)


def accelerator() -> dict[str, Any]:
    """DIANA's digital CU; memories are listed innermost first (ZigZag stacks them in this order)."""
    accumulator_ports = [
        _port("r_port_1", "read", PSUM_BITS, ["O, tl"]),
        _port("r_port_2", "read", PSUM_BITS, ["O, th"]),
        _port("w_port_1", "write", PSUM_BITS, ["O, fh"]),
        _port("w_port_2", "write", PSUM_BITS, ["O, fl"]),
    ]
    memories = {
        "w_reg": _rw_memory(8, 8, ["I2"], ["D2"], ["I2, tl"], ["I2, fh"]),
        "i_reg": _rw_memory(8, 8, ["I1"], ["D1"], ["I1, tl"], ["I1, fh"]),
        "acc_reg": _memory(PSUM_BITS, ["O"], [], accumulator_ports),
        "weight_mem": _rw_memory(64 * 1024 * 8, PORT_BITS, ["I2"], ["D1", "D2"], ["I2, tl"], ["I2, fh"]),
        "l1": _rw_memory(
            256 * 1024 * 8,
            PORT_BITS,
            ["I1", "O"],
            ["D1", "D2"],
            ["I1, tl", "O, tl", "O, th"],
            ["I1, fh", "O, fh", "O, fl"],
        ),
    }
    array = {"unit_energy": 0.0, "unit_area": 0.0, "dimensions": ["D1", "D2"], "sizes": [PE_ROWS, PE_COLS]}
    return {"name": "diana_digital", "memories": memories, "operational_array": array}


def mapping() -> list[dict[str, Any]]:
    return [
        {
            "name": "default",
            "spatial_mapping": {"D1": [f"K, {PE_ROWS}"], "D2": [f"OX, {PE_COLS}"]},
            "memory_operand_links": {"O": "O", "W": "I2", "I": "I1"},
        }
    ]


def workload_layer(index: int, layer: LayerGeometry) -> dict[str, Any]:
    """One ZigZag Conv layer; odimo's axes kept (OX = out_hw[0], FX = kernel[0])."""
    (ox, oy), (fx, fy), (sx, sy) = layer.out_hw, layer.kernel, layer.stride
    return {
        "id": index,
        "name": layer.name,
        "operator_type": "Conv",
        "equation": "O[b][k][oy][ox]+=W[k][c][fy][fx]*I[b][c][iy][ix]",
        "dimension_relations": [f"ix={sx}*ox+1*fx", f"iy={sy}*oy+1*fy"],
        "loop_dims": ["B", "K", "C", "OY", "OX", "FY", "FX"],
        "loop_sizes": [1, layer.c_out, layer.c_in, oy, ox, fy, fx],
        "operand_precision": {"W": 8, "I": 8, "O": PSUM_BITS, "O_final": 8},
        "operand_source": {"I": index, "W": index},  # both operands start in memory: no layer chaining
    }


def zigzag_cycles(layers: list[LayerGeometry]) -> dict[str, float]:
    """ZigZag's latency (cycles) of each layer, by layer name; its dumps go to a temporary folder."""
    import yaml  # a dependency of zigzag-dse, not of odimo
    from zigzag.api import get_hardware_performance_zigzag

    with tempfile.TemporaryDirectory() as tmp:
        accelerator_yaml, mapping_yaml = Path(tmp, "accelerator.yaml"), Path(tmp, "mapping.yaml")
        accelerator_yaml.write_text(yaml.safe_dump(accelerator(), sort_keys=False))
        mapping_yaml.write_text(yaml.safe_dump(mapping(), sort_keys=False))
        _, _, cmes = get_hardware_performance_zigzag(
            [workload_layer(i, layer) for i, layer in enumerate(layers)],
            str(accelerator_yaml),
            str(mapping_yaml),
            opt="latency",
            dump_folder=str(Path(tmp, "out")),
            loma_show_progress_bar=False,
        )
    return {cme.layer.name: float(cme.latency_total2) for cme, _ in cmes[0][1]}


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def summary(rows: list[Row]) -> dict[str, float]:
    odimo = np.array([r.odimo_cycles for r in rows])
    zigzag = np.array([r.zigzag_cycles for r in rows])
    return {
        "spearman": pearson(ranks(odimo), ranks(zigzag)),
        "pearson": pearson(odimo, zigzag),
        "mape": float(np.mean(np.abs(odimo - zigzag) / zigzag)),
    }


def print_table(rows: list[Row], stats: dict[str, float], seconds: float) -> None:
    width = max(len(r.name) for r in rows)
    print(f"{'layer':<{width}}  {'odimo':>10}  {'zigzag':>10}  {'odimo/zz':>8}")
    for r in rows:
        ratio = r.odimo_cycles / r.zigzag_cycles
        print(f"{r.name:<{width}}  {r.odimo_cycles:>10,.2f}  {r.zigzag_cycles:>10,.0f}  {ratio:>8.3f}")
    total_o, total_z = sum(r.odimo_cycles for r in rows), sum(r.zigzag_cycles for r in rows)
    print(f"{'total':<{width}}  {total_o:>10,.2f}  {total_z:>10,.0f}  {total_o / total_z:>8.3f}")
    print(
        f"Spearman {stats['spearman']:.1%}  Pearson {stats['pearson']:.1%}  MAPE {stats['mape']:.1%}"
        f"  ({len(rows)} layers, ZigZag {seconds:.0f} s; paper Table III, DIANA digital: 95 % / 88 % / 42 %)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "resnet20_fmnist.onnx")
    parser.add_argument("--json", type=Path, help="write the results here (schema odimo.zigzag/1)")
    args = parser.parse_args()
    try:
        import zigzag.api  # noqa: F401  (zigzag-dse 3.9.1 fails here without `six`)
    except ImportError as exc:
        print(f"zigzag is not importable ({exc}); install it with: {PIP}")
        return
    logging.basicConfig(level=logging.WARNING)  # before zigzag's own basicConfig(INFO), which then does nothing
    logging.getLogger("zigzag").setLevel(logging.ERROR)  # it warns about every clipped unrolling
    layers = odimo_layers(args.model)
    started = time.perf_counter()
    cycles = zigzag_cycles([layer for layer, _ in layers])
    seconds = time.perf_counter() - started
    rows = [Row(layer.name, odimo, cycles[layer.name]) for layer, odimo in layers]
    stats = summary(rows)
    print_table(rows, stats, seconds)
    if args.json:
        report = {
            "schema": "odimo.zigzag/1",
            "zigzag_version": importlib.metadata.version("zigzag-dse"),
            "layers": [
                {"name": r.name, "odimo_cycles": r.odimo_cycles, "zigzag_cycles": r.zigzag_cycles} for r in rows
            ],
            **stats,
            "assumptions": ASSUMPTIONS,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
