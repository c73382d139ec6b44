"""How much memory this machine can give a compile, to refuse sizes that would exhaust it.

A declared input of 1x3x100000x100000 or an .npz whose header promises 8 GiB is refused before
anything is allocated: allocating first ends in MemoryError (or the OOM killer) instead of a
message that names the tensor.
"""

from __future__ import annotations

import os
from pathlib import Path

MEMINFO = Path("/proc/meminfo")


def available_memory() -> int:
    """Bytes the kernel can give without swapping (MemAvailable), else the physical memory."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def human_bytes(count: float) -> str:
    """1536 -> '1.5 KiB': sizes in messages."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"
