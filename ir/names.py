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


def bias_dequant(node: str) -> str:
    """The DequantizeLinear feeding `node` its int32 bias: `L/<cu>/bias/dequant`."""
    return part(node, "bias", "dequant")


def act_quant(layer: str) -> str:
    """The prefix of the activation quantizer chain on `layer`'s input: `L/act` (`L/act/clip`...)."""
    return part(layer, "act")


def act_quant_output(value: str, layer: str) -> str:
    """The quantized copy of `value` that `layer` reads: `X/L/act`."""
    return part(value, layer, "act")


def add_input(node: str, index: int) -> str:
    """The owner of the quantizer on input `index` of residual Add `node`: `A/input<k>` (its chain
    is `A/input<k>/act/...`, the value it writes `X/A/input<k>/act`)."""
    return part(node, f"input{index}")


def requant(sublayer: str) -> str:
    """The prefix of the Q/DQ pair that requantizes a sub-layer's output: `L/<cu>/requant`."""
    return part(sublayer, "requant")


# onnxruntime's quantization tools pair tensors by these suffixes (onnxruntime.quantization.quant_utils:
# TENSOR_NAME_QUANT_SUFFIX, QUANT_INPUT_SUFFIX, DEQUANT_OUTPUT_SUFFIX): `qdq_loss_debug` matches the
# integer initializer `W_quantized` with the float model's `W`, and an activation `X` with the value
# `X_QuantizeLinear_Input` before its Q/DQ pair or `X_DequantizeLinear_Output` after it.
def quantized(tensor: str) -> str:
    """The integer codes of float initializer `tensor`: `W_quantized`."""
    return f"{tensor}_quantized"


def quant_scale(tensor: str) -> str:
    """The scale of `tensor`'s codes: `W_scale`."""
    return f"{tensor}_scale"


def quant_zero_point(tensor: str) -> str:
    """The zero point of `tensor`'s codes: `W_zero_point`."""
    return f"{tensor}_zero_point"


def quantize_input(value: str) -> str:
    """The value a QuantizeLinear reads when the value after its DequantizeLinear keeps the name."""
    return f"{value}_QuantizeLinear_Input"


def quantize_output(value: str) -> str:
    """The integer codes a QuantizeLinear of `value` writes."""
    return f"{value}_QuantizeLinear_Output"


def dequantize_output(value: str) -> str:
    """The value after the Q/DQ pair of `value` (or the dequantized initializer `value`)."""
    return f"{value}_DequantizeLinear_Output"


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
