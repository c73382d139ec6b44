"""Bad input (onnx-io.md §6): exit code 2, one message saying what, where and how to fix it, and
nothing written. One test per row of the catalogue.

The cases run `odimo-inspect` in-process (`cli.inspect_main`, stderr captured); one test runs the
installed console script in a subprocess to prove the exit code and the absence of a traceback.
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import builders
import numpy as np
import onnx
import pytest
from builders import GraphBuilder, append_node, make_model, tensor_info
from onnx import TensorProto, helper, numpy_helper

from odimo.compiler import cli
from odimo.compiler.importer import MAX_OPSET, MIN_OPSET

MESSAGE = re.compile(
    r"(?P<prog>odimo-[a-z]+): error (?P<code>E1\d\d) (?P<slug>[a-z-]+): (?P<what>.+)\n"
    r"  where: (?P<where>.+)\n  fix: (?P<fix>.+)\n"
)


@dataclass(frozen=True)
class Message:
    code: str
    slug: str
    what: str
    where: str
    fix: str

    @property
    def text(self) -> str:
        return f"{self.what} {self.where}"


def listing(folder: Path) -> list[tuple[str, int]]:
    """Every file and folder below `folder` with its size: a write anywhere changes it."""
    return sorted((str(p.relative_to(folder)), p.stat().st_size if p.is_file() else -1) for p in folder.rglob("*"))


def parse_message(stderr: str, prog: str) -> Message:
    """Exactly one message: three lines (what, where, fix) and nothing else."""
    match = MESSAGE.fullmatch(stderr)
    assert match, f"not one well-formed message:\n{stderr}"
    assert match["prog"] == prog
    return Message(match["code"], match["slug"], match["what"], match["where"], match["fix"])


def inspect_error(path: Path, capsys: pytest.CaptureFixture[str], folder: Path | None = None) -> Message:
    """Run `odimo-inspect PATH`; check exit code 2, no stdout, one message, `folder` unchanged."""
    folder = folder or path.parent
    before = listing(folder)
    code = cli.inspect_main([str(path)])
    out, err = capsys.readouterr()
    assert (code, out) == (2, "")
    assert listing(folder) == before
    return parse_message(err, "odimo-inspect")


def saved(model: onnx.ModelProto, folder: Path, name: str = "model.onnx") -> Path:
    path = folder / name
    onnx.save(model, str(path))
    return path


def conv_model(**build) -> onnx.ModelProto:
    """x -> conv (4 ch) -> gap -> flatten -> fc"""
    g = GraphBuilder()
    return g.build(g.gemm(g.flatten(g.gap(g.conv("x", 4, "conv"), "gap"), "flatten"), 3, "fc"), **build)


# --- the file itself --------------------------------------------------------------------------


def test_missing_path_is_e101(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nope.onnx"
    msg = inspect_error(path, capsys)
    assert msg.code == "E101" and "does not exist" in msg.what
    assert str(path) in msg.where


def test_directory_is_e101(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.mkdir()
    msg = inspect_error(path, capsys, folder=tmp_path)
    assert msg.code == "E101" and "directory" in msg.what
    assert str(path) in msg.where


def test_empty_file_is_e102(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.touch()
    msg = inspect_error(path, capsys)
    assert msg.code == "E102" and "empty" in msg.what
    assert str(path) in msg.where


def truncated_model_bytes() -> bytes:
    """A valid model cut in the middle of its largest initializer's raw data: a length-delimited
    field that ends early never parses, wherever the serializer put it."""
    model = conv_model()
    data = model.SerializeToString(deterministic=True)
    largest = max(model.graph.initializer, key=lambda t: len(t.raw_data)).raw_data
    return data[: data.index(largest) + len(largest) // 2]


def test_truncated_protobuf_is_e102(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(truncated_model_bytes())
    msg = inspect_error(path, capsys)
    assert msg.code == "E102" and "truncated" in msg.what
    assert str(path) in msg.where


def test_random_bytes_are_e102(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    msg = inspect_error(path, capsys)
    assert msg.code == "E102" and "corrupt" in msg.what
    assert str(path) in msg.where


def test_pytorch_checkpoint_is_e103(tmp_path: Path, capsys) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"conv.weight": torch.zeros(4, 3, 3, 3)}, path)
    msg = inspect_error(path, capsys)
    assert msg.code == "E103" and "PyTorch" in msg.what
    assert str(path) in msg.where
    assert "torch.onnx.export" in msg.fix


def test_text_file_is_e103(tmp_path: Path, capsys) -> None:
    path = tmp_path / "model.onnx"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 4096\n")
    msg = inspect_error(path, capsys)
    assert msg.code == "E103" and "text" in msg.what
    assert str(path) in msg.where
    assert "torch.onnx.export" in msg.fix


def test_checker_failure_is_e104_and_names_the_node(tmp_path: Path, capsys) -> None:
    """x -> conv;  'ghost' (never produced) -> Relu 'relu'"""
    g = GraphBuilder()
    g.conv("x", 4, "conv")
    relu = append_node(g, "Relu", ["ghost"], "relu", (4, 8, 8))
    model = make_model(
        g.nodes, g.inits, [tensor_info("x", ["batch", 3, 8, 8])], [tensor_info(relu, ["batch", 4, 8, 8])]
    )
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E104" and "'ghost'" in msg.what
    assert "name: relu OpType: Relu" in msg.what
    assert str(tmp_path / "model.onnx") in msg.where


def test_batch_dependent_shape_is_e107(tmp_path: Path, capsys) -> None:
    """x -> conv -> Slice 'cut' (rows 0 .. batch, from Shape(x)[0:1]) -> relu: H depends on the batch"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    g.nodes.append(helper.make_node("Shape", ["x"], ["batch_size"], name="batch_size", start=0, end=1))
    starts, axes = g._const("cut.starts", np.array([0])), g._const("cut.axes", np.array([2]))
    y = g.relu(append_node(g, "Slice", [y, starts, "batch_size", axes], "cut", (4, 8, 8)), "relu")
    model = make_model(
        g.nodes, g.inits, [tensor_info("x", ["batch", 3, 8, 8])], [tensor_info(y, ["batch", 4, "rows", 8])]
    )
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E107" and "tensor 'cut'" in msg.what
    assert str(tmp_path / "model.onnx") in msg.where


# --- operators -----------------------------------------------------------------------------------


def test_every_unsupported_op_is_listed_e110(tmp_path: Path, capsys) -> None:
    """x -> conv -> acme::Fancy 'fancy' -> If 'branch' (then: Identity, else: Neg)"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    g.nodes.append(helper.make_node("Fancy", [y], ["fancy"], name="fancy", domain="com.acme"))
    g.inits.append(numpy_helper.from_array(np.array(True), "cond"))
    then_branch, else_branch = (
        helper.make_graph([helper.make_node(op, ["fancy"], [out])], op, [], [tensor_info(out, ["batch", 4, 8, 8])])
        for op, out in (("Identity", "t"), ("Neg", "e"))
    )
    g.nodes.append(
        helper.make_node("If", ["cond"], ["branch"], name="branch", then_branch=then_branch, else_branch=else_branch)
    )
    model = make_model(
        g.nodes,
        g.inits,
        [tensor_info("x", ["batch", 3, 8, 8])],
        [tensor_info("branch", ["batch", 4, 8, 8])],
        domains={"com.acme": 1},
    )
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E110" and "2 node(s)" in msg.what
    assert "model.onnx" in msg.where
    assert "node #1 'fancy' (Fancy): custom domain 'com.acme'" in msg.where
    assert "node #2 'branch' (If)" in msg.where


def test_matmul_of_two_activations_is_e110(tmp_path: Path, capsys) -> None:
    """x -> conv -+-> MatMul 'attn/MatMul' (conv @ conv^T over H, W)
    +-> Transpose -^"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    t = append_node(g, "Transpose", [y], "t", (4, 8, 8), perm=[0, 1, 3, 2])
    model = g.build(append_node(g, "MatMul", [y, t], "attn/MatMul", (4, 8, 8)))
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E110"
    assert "'attn/MatMul' (MatMul): MatMul of two activations" in msg.where


def test_conv1d_is_e110(tmp_path: Path, capsys) -> None:
    """x (3x8x8) -> Reshape [0, 3, 64] -> Conv 'conv1d' (k=3)"""
    g = GraphBuilder()
    seq = append_node(g, "Reshape", ["x", g._const("seq.shape", np.array([0, 3, 64], np.int64))], "seq", (3, 64))
    weight = g._const("conv1d.weight", np.ones((4, 3, 3), np.float32))
    model = g.build(append_node(g, "Conv", [seq, weight], "conv1d", (4, 64), pads=[1, 1]))
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E110"
    assert "'conv1d' (Conv): Conv1d" in msg.where


def test_training_mode_batchnorm_is_e110(tmp_path: Path, capsys) -> None:
    """x -> conv -> BatchNormalization 'bn' (training_mode=1, running mean/var outputs)"""
    g = GraphBuilder()
    g.bn(g.conv("x", 4, "conv"), "bn")
    bn = g.nodes.pop()
    g.nodes.append(
        helper.make_node(
            "BatchNormalization",
            list(bn.input),
            ["bn", "bn.running_mean", "bn.running_var"],
            name="bn",
            training_mode=1,
        )
    )
    msg = inspect_error(saved(g.build("bn"), tmp_path), capsys)
    assert msg.code == "E110"
    assert "'bn' (BatchNormalization): training-mode" in msg.where


# --- interface -----------------------------------------------------------------------------------


def test_dynamic_spatial_dims_are_e111(tmp_path: Path, capsys) -> None:
    g = GraphBuilder()
    model = g.build(g.conv("x", 4, "conv"))
    for info in (model.graph.input[0], model.graph.output[0]):
        info.type.tensor_type.shape.dim[2].dim_param = "height"
        info.type.tensor_type.shape.dim[3].dim_param = "width"
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E111"
    assert "'x'" in msg.what and "'height'" in msg.what
    assert "model.onnx" in msg.where and "--input-shape" in msg.fix


def test_two_graph_inputs_are_e112(tmp_path: Path, capsys) -> None:
    """x, mask -> Mul -> conv"""
    g = GraphBuilder()
    y = g.conv(append_node(g, "Mul", ["x", "mask"], "masked", (3, 8, 8)), 4, "conv")
    inputs = [tensor_info("x", ["batch", 3, 8, 8]), tensor_info("mask", ["batch", 3, 8, 8])]
    model = make_model(g.nodes, g.inits, inputs, [tensor_info(y, ["batch", 4, 8, 8])])
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E112" and "2 graph inputs" in msg.what
    assert "'x', 'mask'" in msg.where


def test_two_graph_outputs_are_e113(tmp_path: Path, capsys) -> None:
    """x -> conv (output) -> relu (output)"""
    g = GraphBuilder()
    y = g.conv("x", 4, "conv")
    z = g.relu(y, "relu")
    outputs = [tensor_info(y, ["batch", 4, 8, 8]), tensor_info(z, ["batch", 4, 8, 8])]
    model = make_model(g.nodes, g.inits, [tensor_info("x", ["batch", 3, 8, 8])], outputs)
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E113" and "2 graph outputs" in msg.what
    assert "'conv', 'relu'" in msg.where


def int_input_model() -> onnx.ModelProto:
    """x (int64 NCHW) -> Cast -> conv"""
    g = GraphBuilder()
    y = g.conv(append_node(g, "Cast", ["x"], "as_float", (3, 8, 8), to=TensorProto.FLOAT), 4, "conv")
    return make_model(
        g.nodes,
        g.inits,
        [tensor_info("x", ["batch", 3, 8, 8], TensorProto.INT64)],
        [tensor_info(y, ["batch", 4, 8, 8])],
    )


def rank2_input_model() -> onnx.ModelProto:
    """x [N, 16] -> fc"""
    g = GraphBuilder(channels=16)
    g.shapes["x"] = (16,)
    y = g.gemm("x", 4, "fc")
    return make_model(g.nodes, g.inits, [tensor_info("x", ["batch", 16])], [tensor_info(y, ["batch", 4])])


@pytest.mark.parametrize(
    ("make", "described"), [(int_input_model, "int64 of rank 4"), (rank2_input_model, "float32 of rank 2")]
)
def test_input_not_float_nchw_is_e114(make, described: str, tmp_path: Path, capsys) -> None:
    msg = inspect_error(saved(make(), tmp_path), capsys)
    assert msg.code == "E114"
    assert f"input 'x' is {described}" in msg.what
    assert "model.onnx" in msg.where


def qdq_model() -> onnx.ModelProto:
    """x -> QuantizeLinear 'x/quant' -> DequantizeLinear 'x/dequant' -> conv"""
    g = GraphBuilder()
    scale, zero = g._const("x.scale", np.array(0.02, np.float32)), g._const("x.zero_point", np.array(0, np.int8))
    xq = helper.make_node("QuantizeLinear", ["x", scale, zero], ["xq"], name="x/quant")
    g.nodes.append(xq)
    x = append_node(g, "DequantizeLinear", ["xq", scale, zero], "x/dequant", (3, 8, 8))
    return g.build(g.conv(x, 4, "conv"))


def qlinear_conv_model() -> onnx.ModelProto:
    """x -> QuantizeLinear 'quant' -> QLinearConv 'qconv' -> DequantizeLinear 'dequant'"""
    consts = {
        "s": np.array(0.02, np.float32),
        "z": np.array(128, np.uint8),
        "w": np.full((4, 3, 3, 3), 130, np.uint8),
        "ws": np.array(0.01, np.float32),
        "wz": np.array(128, np.uint8),
    }
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="quant"),
        helper.make_node(
            "QLinearConv", ["xq", "s", "z", "w", "ws", "wz", "s", "z"], ["yq"], name="qconv", pads=[1, 1, 1, 1]
        ),
        helper.make_node("DequantizeLinear", ["yq", "s", "z"], ["y"], name="dequant"),
    ]
    inits = [numpy_helper.from_array(v, k) for k, v in consts.items()]
    return make_model(nodes, inits, [tensor_info("x", ["batch", 3, 8, 8])], [tensor_info("y", ["batch", 4, 8, 8])])


@pytest.mark.parametrize(
    ("make", "node"), [(qdq_model, "'x/dequant' (DequantizeLinear)"), (qlinear_conv_model, "'qconv' (QLinearConv)")]
)
def test_pre_quantized_model_is_e115(make, node: str, tmp_path: Path, capsys) -> None:
    msg = inspect_error(saved(make(), tmp_path), capsys)
    assert msg.code == "E115" and "already quantized" in msg.what
    assert node in msg.where
    assert "float model" in msg.fix


# --- data and versions -------------------------------------------------------------------------


def external_data_model(folder: Path, location: str = "w.data") -> Path:
    """conv_model saved with every initializer in one side file."""
    folder.mkdir(exist_ok=True)
    path = folder / "model.onnx"
    onnx.save(
        conv_model(),
        str(path),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=location,
        size_threshold=0,
    )
    return path


def test_missing_external_data_is_e105(tmp_path: Path, capsys) -> None:
    path = external_data_model(tmp_path)
    (tmp_path / "w.data").unlink()
    msg = inspect_error(path, capsys)
    assert msg.code == "E105" and "'w.data'" in msg.what and "'conv.weight'" in msg.what
    assert str(path) in msg.where


def test_external_data_outside_the_folder_is_e105(tmp_path: Path, capsys) -> None:
    path = external_data_model(tmp_path / "model")
    (tmp_path / "model" / "w.data").rename(tmp_path / "w.data")
    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../w.data"
    onnx.save(model, str(path))
    msg = inspect_error(path, capsys, folder=tmp_path)
    assert msg.code == "E105" and "outside the model's folder" in msg.what
    assert "'../w.data'" in msg.where


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weight_is_e116(bad: float, tmp_path: Path, capsys) -> None:
    model = conv_model()
    weight = next(t for t in model.graph.initializer if t.name == "conv.weight")
    values = numpy_helper.to_array(weight).copy()
    values.flat[[3, 7]] = bad
    weight.CopyFrom(numpy_helper.from_array(values, "conv.weight"))
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E116" and "NaN or Inf" in msg.what
    assert f"'conv.weight' (2 of {values.size} values)" in msg.where


@pytest.mark.parametrize(("opset", "ir_version"), [(MIN_OPSET - 2, 6), (MAX_OPSET + 1, 11)])
def test_opset_out_of_range_is_e106(opset: int, ir_version: int, tmp_path: Path, capsys) -> None:
    model = conv_model(opset=opset, ir_version=ir_version)
    msg = inspect_error(saved(model, tmp_path), capsys)
    assert msg.code == "E106" and f"opset {opset}" in msg.what
    assert str(tmp_path / "model.onnx") in msg.where
    assert "version_converter" in msg.fix


# --- the console script -------------------------------------------------------------------------


def test_console_script_exits_2_with_one_message_and_no_traceback(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(truncated_model_bytes())
    before = listing(tmp_path)
    script = Path(sys.executable).parent / "odimo-inspect"
    done = subprocess.run([str(script), str(path)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert parse_message(done.stderr, "odimo-inspect").code == "E102"
    assert listing(tmp_path) == before


# --- odimo-compile only ------------------------------------------------------------------------

needs_compile = pytest.mark.skipif(
    not hasattr(cli, "compile_main"), reason="odimo-compile (cli.compile_main) is not implemented yet"
)


def compile_error(model: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> Message:
    """Run `odimo-compile MODEL --target diana --mapping all-8bit -o OUT`; same contract as inspect."""
    before = listing(model.parent)
    code = cli.compile_main([str(model), "--target", "diana", "--mapping", "all-8bit", "-o", str(out)])
    out_text, err = capsys.readouterr()
    assert (code, out_text) == (2, "")
    assert listing(model.parent) == before
    return parse_message(err, "odimo-compile")


@needs_compile
def test_model_without_conv_or_gemm_is_e120(tmp_path: Path, capsys) -> None:
    """x -> relu -> gap -> flatten: no layer at all to map"""
    g = GraphBuilder()
    path = saved(g.build(g.flatten(g.gap(g.relu("x", "relu"), "gap"), "flatten")), tmp_path)
    msg = compile_error(path, tmp_path / "out.onnx", capsys)
    assert msg.code == "E120"
    assert "model.onnx" in msg.where and "no conv/gemm at all" in msg.text.lower()


@needs_compile
def test_output_equal_to_input_is_e130(tmp_path: Path, capsys) -> None:
    path = saved(builders.conv_bn_relu(), tmp_path)
    original = path.read_bytes()
    msg = compile_error(path, path, capsys)
    assert msg.code == "E130"
    assert str(path) in msg.where
    assert path.read_bytes() == original
