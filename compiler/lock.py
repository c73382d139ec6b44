"""One compile per output at a time: an advisory lock beside `-o`, held for the whole compile.

Two compiles on the same `-o` would share its checkpoint folder and interleave their files (one
run's report beside the other's model). The lock is `flock` on a hidden file next to the output,
so a killed holder releases it with its last file descriptor; the second compile is refused with
the first one's pid instead of waiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from odimo.ir.errors import OutputLockedError, UnwritableOutputError


def lock_path(output: Path) -> Path:
    return output.parent / f".{output.name}.odimo-lock"


@contextlib.contextmanager
def output_lock(output: Path) -> Iterator[None]:
    """Hold the lock of `output` (E130 output-locked when another compile holds it); the lock file
    is removed on the way out."""
    path = lock_path(output)
    fd = _acquire(path)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(fd)


def _acquire(path: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise UnwritableOutputError(
                f"cannot create the output lock ({exc.strerror})", str(path), "choose a writable -o folder"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputLockedError(
                f"another odimo-compile (pid {holder}) is writing this output",
                str(path.parent / path.name[1 : -len(".odimo-lock")]),
                "wait for it to finish, or choose another -o",
            ) from None
        # The holder may have unlinked the file between our open and our lock: then we hold a lock
        # on a file nobody else can find, so start over on the path's current file.
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)
