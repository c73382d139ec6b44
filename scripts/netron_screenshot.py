#!/usr/bin/env python3
"""Render a partitioned ONNX in Netron (headless Chromium) and save a PNG of the graph.

    python scripts/netron_screenshot.py MODEL.onnx OUT.png [--node conv1/analog]

By default the sidebar is opened on a sub-layer of the first split layer (the last producer of
the first Concat tagged `odimo.role=concat`), so the PNG shows the sub-layers, their Concat and the
sub-layer's `odimo.*` metadata.

This module is also the Netron driver of tests/netron/test_netron_view.py, following
specs/onnx-io.md §7. The whole page runs offline: netron serves its packaged files on loopback,
every other request (analytics, ipinfo.io) is aborted, a `consent=1` cookie skips the cookie dialog,
and the page clock starts at the build date in netron's index.html, since builds over 180 days old
block on "Please update to the newest version.".

Netron replaces `window.eval`, which Playwright's `evaluate`, `all_text_contents` and
`inner_html` rely on; only locator actions, `text_content` and `get_attribute` are used here.

Needs `netron`, `playwright` and Debian's `chromium` (`./setup.sh --test` installs all three)
(Playwright's own browser download is not used).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from playwright.sync_api import Locator, Page, Route

CHROMIUM = "chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "::1"}
# Netron draws the graph after the model is parsed; a tiny model takes ~1 s, a ResNet-20 a few.
LOAD_TIMEOUT_MS = 30_000


def missing_requirements() -> list[str]:
    """What keeps Netron from rendering here, one phrase each; empty when it can."""
    missing = []
    for module, package in (("netron", "netron"), ("playwright.sync_api", "playwright")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"python package '{package}' (./setup.sh --test)")
    if shutil.which(CHROMIUM) is None:
        missing.append(f"'{CHROMIUM}' on PATH (Debian: apt-get install chromium; ./setup.sh --test as root)")
    return missing


def netron_build_date() -> dt.datetime:
    """The `<meta name="date">` of the installed netron's index.html, in UTC as netron reads it."""
    import netron

    index = Path(netron.__file__).with_name("index.html").read_text(encoding="utf-8")
    found = re.search(r'<meta name="date" content="([^"]+)"', index)
    if found is None:
        raise RuntimeError(f'no <meta name="date"> in {Path(netron.__file__).with_name("index.html")}')
    return dt.datetime.fromisoformat(found.group(1).replace(" ", "T")).replace(tzinfo=dt.timezone.utc)


def _loopback_only(route: Route) -> None:
    if urlsplit(route.request.url).hostname in LOOPBACK:
        route.continue_()
    else:
        route.abort()


@contextmanager
def netron_page(model: Path, width: int = 1400, height: int = 900, scale: float = 1) -> Iterator[Page]:
    """A Chromium page showing `model` in Netron with node names on, once the graph is drawn."""
    import netron
    from playwright.sync_api import sync_playwright

    chromium = shutil.which(CHROMIUM)
    if chromium is None:
        raise RuntimeError(f"'{CHROMIUM}' is not on PATH (Debian: apt-get install chromium)")
    # Port 0: netron binds a free port and returns it.
    address = netron.start(str(model), ("127.0.0.1", 0), browse=False)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                context = browser.new_context(
                    viewport={"width": width, "height": height},
                    device_scale_factor=scale,
                    color_scheme="light",
                )
                context.add_cookies([{"name": "consent", "value": "1", "domain": address[0], "path": "/"}])
                context.route("**/*", _loopback_only)
                context.add_init_script('localStorage.setItem("options", JSON.stringify({"names": true}));')
                page = context.new_page()
                page.clock.install(time=netron_build_date())
                page.goto(f"http://{address[0]}:{address[1]}/")
                page.wait_for_selector("#canvas g.node", timeout=LOAD_TIMEOUT_MS)
                yield page
            finally:
                browser.close()
    finally:
        netron.stop(address)


def node_header(page: Page, name: str) -> Locator:
    """The clickable title box of the node drawn as `name` (exact text; Netron elides names over 21 characters)."""
    return page.locator("#canvas g.node-item-type").filter(has=page.get_by_text(name, exact=True))


def drawn_node_names(page: Page) -> list[str]:
    """The titles of all drawn nodes (node names with names on, else op types)."""
    titles = page.locator("#canvas g.node-item-type > text")
    return [titles.nth(k).text_content() or "" for k in range(titles.count())]


def sidebar_entry(page: Page, section: str, key: str) -> Locator:
    """The value list of the sidebar row `key` under the heading `section` (e.g. "Metadata").

    Netron's sidebar is flat: a `div.sidebar-section` heading, then `div.sidebar-item` rows whose
    name is a read-only `<input value=KEY>`; a row belongs to the nearest heading above it.
    """
    return page.locator(
        "xpath=//div[@id='sidebar-content']//div[@class='sidebar-item']"
        f"[div[@class='sidebar-item-name']/input[@value='{key}']]"
        f"[preceding-sibling::div[@class='sidebar-section'][1][normalize-space()='{section}']]"
        "/div[@class='sidebar-item-value-list']"
    )


def open_node(page: Page, name: str) -> None:
    """Select node `name`, which opens Node Properties in the sidebar."""
    node_header(page, name).click()
    page.locator("#sidebar-title", has_text="Node Properties").wait_for()


def open_model_properties(page: Page) -> None:
    """Open Model Properties (the toolbar's list button): format, description, model metadata."""
    page.locator("#sidebar-model-button").click()
    page.locator("#sidebar-title", has_text="Model Properties").wait_for()


def default_node(model: Path) -> str | None:
    """The last producer of the first odimo Concat (diana: the analog sub-layer), or None if nothing is split."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    producer = {out: node.name for node in graph.node for out in node.output}
    for node in graph.node:
        if any(p.key == "odimo.role" and p.value == "concat" for p in node.metadata_props):
            return producer.get(node.input[-1])
    return None


def save_screenshot(model: Path, out: Path, node: str | None, width: int, height: int, scale: float) -> None:
    with netron_page(model, width, height, scale) as page:
        if node is not None:
            header = node_header(page, node)
            if header.count() == 0:
                raise SystemExit(f"netron_screenshot: no node drawn as '{node}' in {model}; pass --node")
            header.scroll_into_view_if_needed()
            open_node(page, node)
            sidebar_entry(page, "Metadata", "odimo.cu").wait_for()
            page.wait_for_timeout(300)  # the sidebar slides in over 0.1 s
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="partitioned ONNX written by odimo-compile")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--node", help="node whose properties to show (default: a sub-layer of the first split layer)")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=900)
    parser.add_argument("--scale", type=float, default=2, help="device pixel ratio (default: 2)")
    args = parser.parse_args(argv)
    missing = missing_requirements()
    if missing:
        print(f"netron_screenshot: cannot render: missing {'; '.join(missing)}", file=sys.stderr)
        return 2
    if not args.model.is_file():
        print(f"netron_screenshot: no such file: {args.model}", file=sys.stderr)
        return 2
    node = args.node or default_node(args.model)
    save_screenshot(args.model, args.out, node, args.width, args.height, args.scale)
    print(f"wrote {args.out}" + (f" (sidebar: {node})" if node else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
