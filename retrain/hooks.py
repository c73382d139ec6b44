"""Forward hooks that live only as long as one block: calibration and distillation both record
layer inputs and outputs for a single forward pass, and a hook left behind would keep recording
(and keep its tensors alive) on every later pass."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def removed_after(hooks: list[torch.utils.hooks.RemovableHandle]) -> Iterator[None]:
    """Run the block, then remove `hooks`, also when it raises."""
    try:
        yield
    finally:
        for hook in hooks:
            hook.remove()
