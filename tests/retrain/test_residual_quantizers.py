"""Both inputs of a residual Add are 7-bit quantized in training (method.md §6), on DIANA only.

residual_add: `add` reads conv2's output (its own signed PACT: a conv output may be negative) and
stem_relu, the identity path, which conv1 reads too: the Add reads conv1's input quantizer itself.

    x -> stem -> stem_relu -+-> conv1 -> relu1 -> conv2 -> add -> relu2 -> gap -> flatten -> fc
                            +-----------------------------^
"""

from __future__ import annotations

from collections.abc import Callable

import onnx
import pytest
import torch
from builders import residual_add, residual_shortcut

from odimo.ir.records import ImportedModel, Rounding
from odimo.retrain.bridge import OnnxModule
from odimo.retrain.calibrate import calibrate
from odimo.retrain.quantizers import PactActivation, set_act_rounding
from odimo.retrain.supernet import HIDDEN_CLIP, ResidualInput, Supernet
from odimo.targets import get_target
from odimo.targets.base import ParamSet
from odimo.targets.plan import plan_for_target

Importer = Callable[[onnx.ModelProto, str], ImportedModel]


def _supernet(imported: Importer, model: onnx.ModelProto, target: str = "diana") -> Supernet:
    source = imported(model, "model")
    return Supernet(source.model, plan_for_target(source.model, get_target(target)))


def _values(supernet: Supernet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every value of the bridged graph on `x` (as the supernet computes them)."""
    with torch.no_grad():
        return supernet.net._run(x, frozenset())


def _images(count: int = 4) -> torch.Tensor:
    return torch.rand(count, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def test_the_identity_path_reads_its_layer_s_quantizer_and_the_other_input_its_own(imported: Importer) -> None:
    supernet = _supernet(imported, residual_add())
    assert supernet.residual_inputs == [
        ResidualInput("add", 0, "conv2", None),
        ResidualInput("add", 1, "stem_relu", "conv1"),
    ]
    shared, own = (supernet.residual_quantizer(e) for e in reversed(supernet.residual_inputs))
    assert shared is supernet.mixed("conv1").act  # one module: one clip, one set of codes
    assert list(supernet.residual_quantizers.values()) == [own]
    assert own.signed and own.clip.item() == HIDDEN_CLIP and not shared.signed
    assert any(p is own.clip for p in supernet.parameter_set(ParamSet.QUANTIZERS))
    assert not any(p is own.clip for p in supernet.parameter_set(ParamSet.NETWORK))
    assert "residual_quantizers.add/input0.clip" in supernet.state_dict()  # saved and resumed with the rest


def test_the_add_sums_the_quantized_inputs_and_act_quant_disabled_restores_the_float_sum(imported: Importer) -> None:
    supernet = _supernet(imported, residual_add())
    shared, own = supernet.mixed("conv1").act, next(iter(supernet.residual_quantizers.values()))
    with torch.no_grad():
        own.clip.fill_(0.5)  # narrow enough that the conv2 output is clipped and rounded visibly
    values = _values(supernet, _images())
    with torch.no_grad():
        quantized = own(values["conv2"]) + shared(values["stem_relu"])
        codes = own(values["conv2"]) * own.scale()
    assert torch.equal(values["add"], quantized)
    assert not torch.allclose(values["add"], values["conv2"] + values["stem_relu"], atol=1e-3)
    assert torch.equal(codes, torch.round(codes)) and float(codes.abs().max()) <= 63
    with supernet.act_quant_disabled():
        plain = _values(supernet, _images())
    assert torch.equal(plain["add"], plain["conv2"] + plain["stem_relu"])
    assert own.enabled and shared.enabled


def test_a_residual_quantizer_trains_its_clip_from_both_sides_of_the_add(imported: Importer) -> None:
    supernet = _supernet(imported, residual_add())
    own = next(iter(supernet.residual_quantizers.values()))
    with torch.no_grad():
        own.clip.fill_(0.05)
    supernet(_images()).sum().backward()
    assert own.clip.grad is not None and float(own.clip.grad) != 0.0


def test_calibration_sets_the_own_clips_from_the_add_inputs(imported: Importer) -> None:
    source = imported(residual_shortcut(), "residual_shortcut")
    supernet = Supernet(source.model, plan_for_target(source.model, get_target("diana")))
    own = dict(supernet.residual_quantizers.items())
    assert sorted(own) == ["add1/input0", "add2/input0", "add2/input1"]  # conv2, conv4 and the shortcut conv
    calibrate(supernet, OnnxModule(source.model), _images(16))
    assert all(q.clip.item() != HIDDEN_CLIP for q in own.values()), {k: q.clip.item() for k, q in own.items()}
    assert all(q.effective_clip() >= q.clip.item() for q in own.values())


def test_the_activation_rounding_reaches_the_residual_quantizers(imported: Importer) -> None:
    supernet = _supernet(imported, residual_add())
    set_act_rounding(supernet, Rounding.FLOOR)
    assert [q.rounding for q in supernet.residual_quantizers.values()] == [Rounding.FLOOR]
    assert [a.quant.rounding for a in supernet.add_input_quantizers()] == [Rounding.FLOOR] * 2


def test_the_emission_records_name_the_shared_layer_and_carry_the_trained_numbers(imported: Importer) -> None:
    supernet = _supernet(imported, residual_add())
    own_entry, shared_entry = supernet.add_input_quantizers()
    assert (own_entry.node, own_entry.index, own_entry.shares) == ("add", 0, None)
    assert own_entry.quant.input == "conv2" and own_entry.quant.low == -own_entry.quant.clip
    assert shared_entry.shares == "conv1" and shared_entry.quant == supernet.act_quantizers()["conv1"]


@pytest.mark.parametrize("model", [residual_add, residual_shortcut])
def test_darkside_trains_float_and_quantizes_no_add(imported: Importer, model: Callable[[], onnx.ModelProto]) -> None:
    supernet = _supernet(imported, model(), "darkside")
    assert supernet.residual_inputs == [] and len(supernet.residual_quantizers) == 0
    assert supernet.add_input_quantizers() == ()
    assert not any(isinstance(m, PactActivation) for m in supernet.modules())
