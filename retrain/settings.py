"""The one record of how to train: the search, the final phase and a given mapping's fine-tuning.

The CLI fills it once; the driver adds where checkpoints go; the trainer and the search stage read
it. One record, so a setting such as the seed cannot disagree between two copies.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from odimo.ir.records import Rounding


@dataclass(frozen=True)
class SearchSettings:
    data: str = "fashion-mnist"
    epochs: tuple[int, int, int] = (0, 1, 1)  # warm-up, search, final
    lam: float = 0.0  # weight of the cost relative to the accurate corner's (All-8bit, All-conv): 1 = as heavy
    # Instead of a fixed λ, a target: the search adapts λ to end `target_ratio` times cheaper (in the
    # objective) than the accurate corner, starting from `lam`.
    target_ratio: float | None = None
    objective: str = "latency"
    seed: int = 0
    device: str = "cpu"
    batch_size: int = 128
    limit_batches: int | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool = True
    save_supernet_graph: bool = False
    distill: bool = True  # the imported float model teaches every phase (KL on logits)
    refine: bool = True  # the searched argmax is refined on the exact objective (targets/refine.py)
    calibration_images: int = 256  # training images that calibrate the quantized layers; 0: none
    source_sha256: str = ""  # of the model file trained: a checkpoint of another model is refused
    # How the PACT activation quantizers round: half to even is QuantizeLinear's own rounding (an
    # exact standard Q/DQ form); floor is a plain right shift (emitted as a float-op chain).
    act_rounding: Rounding = Rounding.HALF_EVEN
