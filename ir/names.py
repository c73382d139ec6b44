"""Every name odimo gives a node, value or initializer it creates, built in one place.

Generated names are a protocol: split_layers names the sub-layers, the QDQ and activation passes
add nodes beside them, the annotations find all of them by name, the report lists them, and users
read them in Netron. Writers and readers call the same function here, so the protocol cannot drift
between modules. A name is its owner's name, '/', and what the part is (onnx-io.md §3).
"""

from __future__ import annotations

SEP = "/"


def part(owner: str, *parts: str) -> str:
    """A name inside `owner`: `owner/part/...` (for names only one pass reads)."""
    return SEP.join((owner, *parts))


def sublayer(layer: str, cu: str) -> str:
    """The node computing `layer`'s channels on `cu`: `L/<cu>`."""
    return part(layer, cu)


def sublayer_output(output: str, cu: str) -> str:
    """The value a sub-layer writes when its layer is split: `Y/<cu>`."""
    return part(output, cu)


def concat(layer: str) -> str:
    """The Concat joining `layer`'s sub-layer outputs in CU order: `L/concat`."""
    return part(layer, "concat")


def input_slice(layer: str, cu: str) -> str:
    """The Slice feeding a substitute its own input channels: `L/<cu>/slice`."""
    return part(layer, cu, "slice")


def sliced_input(value: str, layer: str, cu: str) -> str:
    """The value that Slice writes: `X/L/<cu>/slice`."""
    return part(value, layer, cu, "slice")


def dequant(node: str) -> str:
    """The DequantizeLinear feeding `node` its integer weights: `L/<cu>/dequant`."""
    return part(node, "dequant")


def act_quant(layer: str) -> str:
    """The prefix of the activation quantizer chain on `layer`'s input: `L/act` (`L/act/clip`...)."""
    return part(layer, "act")


def act_quant_output(value: str, layer: str) -> str:
    """The quantized copy of `value` that `layer` reads: `X/L/act`."""
    return part(value, layer, "act")


def is_act_quant(node: str) -> bool:
    """Whether `node` is a node of an activation quantizer chain."""
    return f"{SEP}act{SEP}" in node


def belongs_to(node: str, layer: str) -> bool:
    """`conv2`, `conv2/analog` and `conv2/dwe/slice` belong to layer `conv2`."""
    return node == layer or node.startswith(layer + SEP)


def private_copy(initializer: str, node: str) -> str:
    """A copy of a shared initializer that only `node` reads and may rewrite: `W@node`."""
    return f"{initializer}@{node}"


def new_parameter(node: str, which: str) -> str:
    """An initializer a pass adds to `node` (its bias when it had none): `node/bias`."""
    return part(node, which)
