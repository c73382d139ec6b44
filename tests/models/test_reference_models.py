"""Reference networks: layer geometry, ONNX export with a dynamic batch, onnxruntime == torch."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch_helpers import randomize_batchnorm

from odimo.models.export import (
    BATCH_DIM,
    MAX_ABS_DIFF,
    export_onnx,
    load_weights_from_onnx,
    main,
    max_abs_diff,
)
from odimo.models.zoo import MODELS, build

INPUT_SHAPE = (3, 32, 32)


def _conv_geometry(module: nn.Module, input_shape: tuple[int, int, int]) -> list[tuple]:
    """(name, c_in, c_out, k, stride, groups, output map) of every Conv2d, in execution order."""
    rows: list[tuple] = []

    def hook(name: str):
        def record(m: nn.Conv2d, _inputs: tuple, output: torch.Tensor) -> None:
            rows.append(
                (name, m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups,
                 output.shape[-1])
            )  # fmt: skip

        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in module.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        module.eval()(torch.zeros(1, *input_shape))
    for h in handles:
        h.remove()
    return rows


@pytest.mark.parametrize(("name", "convs"), [("resnet8", 9), ("resnet20", 21)], ids=["resnet8", "resnet20"])
def test_resnet_has_stem_block_and_shortcut_convs(name: str, convs: int) -> None:
    rows = _conv_geometry(build(name, 10, 3), INPUT_SHAPE)
    assert len(rows) == convs
    shortcuts = [r for r in rows if "shortcut" in r[0]]
    assert [(r[1], r[2], r[3], r[4], r[6]) for r in shortcuts] == [
        (16, 32, 1, 2, 16),
        (32, 64, 1, 2, 8),
    ]
    assert {r[2] for r in rows} == {16, 32, 64}


def test_darkside_seed_searchable_layers_match_targets_5_4() -> None:
    rows = _conv_geometry(build("darkside_seed", 10, 3), INPUT_SHAPE)
    searchable = [(r[2], r[6]) for r in rows if r[3] == 3 and r[5] == 1 and r[1] == r[2]]
    assert searchable == [(128, 8), (256, 4)] + [(512, 2)] * 5 + [(1024, 1)]
    depthwise = [(r[2], r[4], r[6]) for r in rows if r[5] > 1]
    assert depthwise == [(32, 1, 16), (64, 2, 8), (128, 2, 4), (256, 2, 2), (512, 2, 1)]
    assert rows[0][1:] == (3, 32, 3, 2, 1, 16)  # stem: 3x3 stride 2 on 32x32


@pytest.mark.parametrize(("name", "width"), [("mobilenetv1_025", 0.25), ("mobilenetv1_100", 1.0)])
def test_mobilenet_v1_has_13_separable_blocks_with_cifar_strides(name: str, width: float) -> None:
    rows = _conv_geometry(build(name, 10, 3), INPUT_SHAPE)
    depthwise = [r for r in rows if r[5] > 1]
    pointwise = [r for r in rows if r[3] == 1]
    assert len(depthwise) == len(pointwise) == 13
    assert [r[6] for r in pointwise] == [16, 8, 8, 4, 4, 2, 2, 2, 2, 2, 2, 1, 1]
    assert pointwise[-1][2] == int(1024 * width)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_export_runs_in_onnxruntime_like_torch_at_batch_1_and_3(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    module = randomize_batchnorm(build(name, 10, 3), seed=1)
    path = tmp_path / f"{name}.onnx"
    export_onnx(module, path, INPUT_SHAPE)

    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert dims[0].dim_param == BATCH_DIM
    assert [d.dim_value for d in dims[1:]] == list(INPUT_SHAPE)
    assert model.graph.output[0].type.tensor_type.shape.dim[0].dim_param == BATCH_DIM
    assert "Identity" not in {n.op_type for n in model.graph.node}
    for batch in (1, 3):
        assert max_abs_diff(module, path, INPUT_SHAPE, batch, seed=batch) <= MAX_ABS_DIFF


def test_resnet20_export_has_22_conv_and_gemm_nodes_named_by_module(tmp_path: Path) -> None:
    path = tmp_path / "r20.onnx"
    export_onnx(build("resnet20", 10, 1), path, (1, 32, 32))
    nodes = onnx.load(str(path)).graph.node
    counts = Counter(n.op_type for n in nodes)
    assert counts["Conv"] + counts["Gemm"] == 22
    assert counts["BatchNormalization"] == 21  # BN is kept for odimo to fold
    conv_names = [n.name for n in nodes if n.op_type == "Conv"]
    assert conv_names[0] == "/stem/stem.0/Conv"
    assert "/layer2/layer2.0/shortcut/shortcut.0/Conv" in conv_names


def test_export_leaves_module_in_training_mode(tmp_path: Path) -> None:
    module = build("resnet8", 10, 3)
    export_onnx(module, tmp_path / "r8.onnx", INPUT_SHAPE)
    assert module.training


def test_weights_read_back_from_onnx_reproduce_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    original = randomize_batchnorm(build("resnet8", 10, 3), seed=2)
    path = tmp_path / "r8.onnx"
    export_onnx(original, path, INPUT_SHAPE)
    torch.manual_seed(1)
    copy = load_weights_from_onnx(build("resnet8", 10, 3), path)
    x = torch.rand(2, *INPUT_SHAPE)
    with torch.no_grad():
        np.testing.assert_array_equal(original.eval()(x).numpy(), copy.eval()(x).numpy())


def test_weights_from_another_model_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r8.onnx"
    export_onnx(build("resnet8", 10, 3), path, INPUT_SHAPE)
    with pytest.raises(ValueError, match="layer1.1.conv1.weight"):
        load_weights_from_onnx(build("resnet20", 10, 3), path)


def test_export_cli_writes_a_verified_model(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "cli.onnx"
    args = ["resnet8", "-o", str(path), "--input-shape", "1x28x28", "--num-classes", "5"]
    assert main(args) == 0
    output = onnx.load(str(path)).graph.output[0]
    assert output.type.tensor_type.shape.dim[1].dim_value == 5
    assert "max |torch - onnxruntime|" in capsys.readouterr().out


def test_unknown_model_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        build("resnet21", 10, 3)


def test_train_default_trains_any_zoo_network_and_names_the_output_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from odimo.models import train_default

    path = tmp_path / "mbv1.onnx"
    assert (
        train_default.main(
            [
                "--arch",
                "mobilenetv1_025",
                "--data",
                "synthetic",
                "--epochs",
                "1",
                "--max-steps",
                "2",
                "--threads",
                "1",
                "-o",
                str(path),
            ]
        )
        == 0
    )
    assert "mobilenetv1_025 on synthetic" in capsys.readouterr().out
    assert sum(node.op_type == "Conv" for node in onnx.load(str(path)).graph.node) == 27
