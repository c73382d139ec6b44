"""The geometry of a costed layer: the one record that cost models, baselines and passes share.

It is deliberately free of ONNX types so a target module can be read and tested without a graph.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class LayerKind(enum.Enum):
    """What a costed layer computes, as far as a compute unit cares."""

    CONV = "conv"  # Conv with groups == 1
    DEPTHWISE = "depthwise"  # Conv with groups == c_in == c_out
    GROUPED = "grouped"  # Conv with 1 < groups, not depthwise
    LINEAR = "linear"  # Gemm / MatMul with a constant weight (Cout, Cin)


@dataclass(frozen=True)
class LayerGeometry:
    """Shape facts of one Conv or fully connected layer.

    `kernel` and `out_hw` are (along H, along W). DIANA calls these (kx, ky) and (OX, OY);
    Darkside calls the output (o_y, o_x) (targets.md §1). A linear layer has kernel (1, 1) and
    out_hw (1, 1), so it is costed as a 1x1 conv on a 1x1 map.
    """

    name: str
    kind: LayerKind
    c_in: int
    c_out: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1
    out_hw: tuple[int, int] = (1, 1)

    @staticmethod
    def conv(
        name: str,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int],
        out_hw: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        groups: int = 1,
        dilation: int | tuple[int, int] = 1,
    ) -> "LayerGeometry":
        """Build a Conv geometry, classifying groups the way ONNX Conv does."""
        if groups == 1:
            kind = LayerKind.CONV
        elif groups == c_in == c_out:
            kind = LayerKind.DEPTHWISE
        else:
            kind = LayerKind.GROUPED
        return LayerGeometry(
            name=name,
            kind=kind,
            c_in=c_in,
            c_out=c_out,
            kernel=_pair(kernel),
            stride=_pair(stride),
            dilation=_pair(dilation),
            groups=groups,
            out_hw=_pair(out_hw),
        )

    @staticmethod
    def linear(name: str, c_in: int, c_out: int) -> "LayerGeometry":
        return LayerGeometry(name=name, kind=LayerKind.LINEAR, c_in=c_in, c_out=c_out)


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))
