"""Netron shows the partition: sub-layers, their Concat, and the odimo metadata (onnx-io.md §7).

The page is driven by scripts/netron_screenshot.py (also used for docs/netron.png), so the test
and the picture render the same way. It needs `netron` and `playwright` and Debian's `chromium` on
PATH (`./setup.sh --test` installs all three, chromium as root): without them it skips, and fails
in CI; `-m "not netron"` deselects it.

    x -> stem/digital -> stem_relu -+-> conv1/digital -+-> conv1/concat -> relu1 -> conv2/digital -> add -> ...
                                    +-> conv1/analog  -+
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import builders
import pytest
from optional import require

from odimo.compiler import pipeline
from odimo.compiler.pipeline import CompileOptions

HERE = Path(__file__).parent
MAPPING = HERE / "residual_add_split.mapping.json"  # conv1 split digital/analog, the rest digital


def _load_driver() -> ModuleType:
    path = HERE.parents[1] / "scripts" / "netron_screenshot.py"
    spec = importlib.util.spec_from_file_location("netron_screenshot", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


driver = _load_driver()


@pytest.fixture(scope="module")
def split_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """residual_add compiled for diana (QDQ) with conv1 split across digital and analog."""
    folder = tmp_path_factory.mktemp("netron")
    source = builders.save(builders.residual_add(), folder / "residual_add.onnx")
    result = pipeline.compile(
        source, CompileOptions(target="diana", mapping=str(MAPPING), output=folder / "residual_add.diana.onnx")
    )
    return result.paths.model


@pytest.mark.netron
def test_netron_shows_split_conv1_with_cu_metadata(split_model: Path, tmp_path: Path) -> None:
    require([f"Netron check needs {reason}" for reason in driver.missing_requirements()])
    from playwright.sync_api import expect

    with driver.netron_page(split_model) as page:
        try:
            drawn = driver.drawn_node_names(page)
            assert {"conv1/digital", "conv1/analog", "conv1/concat"} <= set(drawn), drawn

            for cu in ("analog", "digital"):
                driver.open_node(page, f"conv1/{cu}")
                expect(driver.sidebar_entry(page, "Metadata", "odimo.cu")).to_have_text(cu)
                expect(driver.sidebar_entry(page, "Metadata", "odimo.source_node")).to_have_text("conv1")

            driver.open_model_properties(page)
            expect(driver.sidebar_entry(page, "Metadata", "odimo.target")).to_have_text("diana")
        except BaseException:
            page.screenshot(path=str(tmp_path / "netron-failure.png"))
            raise


@pytest.mark.parametrize("absent", ["playwright", "netron", "chromium"])
def test_netron_check_names_what_is_missing(absent: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if absent == "chromium":
        monkeypatch.setattr(shutil, "which", lambda name, *args, **kwargs: None)
    else:
        # A None entry makes `import` raise ImportError, as in a venv without the package.
        for name in {absent, *(m for m in sys.modules if m.startswith(f"{absent}."))}:
            monkeypatch.setitem(sys.modules, name, None)
    missing = driver.missing_requirements()
    assert any(f"'{absent}'" in reason for reason in missing), missing
