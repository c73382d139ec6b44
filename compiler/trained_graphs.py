"""The trained numbers of the search stage written into graphs: the driver's side of retrain.

retrain returns arrays by node name; here they become the user's graph with its trained weights
(`trained_model`) and, on request, the search graph checked against the supernet's own outputs
(`checked_search_graph`). Keeping this graph work out of retrain lets passes and retrain stay
siblings that never import each other.
"""

from __future__ import annotations

import numpy as np
import onnx

from odimo.ir.errors import ReferenceMismatchError
from odimo.ir.verify import ABS_TOL, REL_TOL, logits_view, run, session
from odimo.passes.act_quant import insert_act_quant
from odimo.passes.search_graph import search_graph
from odimo.passes.set_weights import set_weights
from odimo.retrain.run import SearchGraphCheck, Trained


def trained_model(model: onnx.ModelProto, trained: Trained) -> onnx.ModelProto:
    """The canonical graph with the trained weights, biases and constants in the same nodes."""
    return set_weights(model, trained.weights, trained.biases, trained.constants).model


def checked_search_graph(model: onnx.ModelProto, trained: Trained) -> onnx.ModelProto | None:
    """The searched network with one function call per searchable layer, or None when not asked.

    It must compute the torch supernet's logits on the probes (eval mode, soft choices, both
    without activation quantizers, onnx-io.md §4); the quantizer chains are inserted after.
    """
    check: SearchGraphCheck | None = trained.search_graph
    if check is None:
        return None
    graph = search_graph(model, check.nodes).model
    produced = run(session(logits_view(graph)), check.probes)[0]  # the supernet returns logits
    deviation = float(np.abs(produced - check.expected).max())
    if deviation > ABS_TOL + REL_TOL * float(np.abs(check.expected).max()):
        raise ReferenceMismatchError(
            f"the search graph differs from the torch supernet by {deviation:.3g}",
        )
    return insert_act_quant(graph, trained.act_quant).model
