"""Quantize each layer's weights per channel for the CU that runs it (the QDQ emission's input).

Every channel is quantized in its CU's format (`Target.weight_formats`) with the layer-level scale
of that format (the int8 pow2 scale is per layer, over all channels; ternary scales are per
channel), so a channel's numbers do not depend on where its neighbours went.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import onnx

from odimo.ir.assignment import Assignment
from odimo.ir.graph import GraphIndex
from odimo.ir.records import QuantizedLayers, Substitute
from odimo.targets.base import Role
from odimo.targets.plan import TargetPlan
from odimo.targets.quantization import quantize


def quantize_layers(
    model: onnx.ModelProto, plan: TargetPlan, mapping: Assignment, substitutes: Mapping[str, Substitute]
) -> QuantizedLayers:
    index = GraphIndex.of(model.graph)
    formats = plan.target.weight_formats
    weights, steps = {}, {}
    for layer in plan.layers:
        if layer.support.role is Role.HOST:
            continue
        weight = index.array(layer.layer.weight)
        cus = np.array(mapping.layers[layer.name])
        dequantized = np.empty_like(weight)
        step = np.empty(weight.shape[0], dtype=np.float32)
        for cu in dict.fromkeys(cus.tolist()):
            rows = cus == cu
            q = quantize(weight, formats[cu])
            dequantized[rows] = q.dequantize()[rows]
            step[rows] = q.step[rows]
        weights[layer.name], steps[layer.name] = dequantized, step
    quantized_subs, sub_steps = {}, {}
    for name, sub in substitutes.items():
        q = quantize(sub.weight, formats[sub.cu])
        quantized_subs[name] = Substitute(sub.cu, q.dequantize(), sub.bias)
        sub_steps[name] = q.step
    return QuantizedLayers(weights, steps, quantized_subs, sub_steps)
