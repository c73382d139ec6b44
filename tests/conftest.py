"""Shared pytest setup: make tests/builders.py and the zoo importable from every test folder.

Under pytest-xdist each worker runs torch on one thread: two workers on two cores already fill the
machine, and a second intra-op thread per worker only adds OpenMP spin-waits.
"""

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

# The `zoo_model` fixture, for every test module (needs `tests/` on sys.path, just above).
pytest_plugins = ["zoo.fixtures"]

if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep each zoo family's tests on one xdist worker (`--dist loadgroup`), so its exports, the
    slow part (dynamo: about 1.6 s a model), happen once per session and not once per worker."""
    # The long tests first, so the two workers finish together instead of one waiting on the last.
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
    for item in items:
        callspec = getattr(item, "callspec", None)
        family = callspec.params.get("family") if callspec else None
        if isinstance(family, str) and "zoo_model" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group(f"zoo-{family}"))
