"""User text made safe to print: control characters escaped, length bounded.

Node, value and mapping names, paths and file contents reach a terminal through error messages,
the `odimo-inspect` table and plot labels. A name holding an escape sequence could clear the screen
or forge a `fix:` line, and a 100 MB mapping file quoted whole makes a 100 MB message, so every
place that prints user data passes it through `printable`.
"""

from __future__ import annotations

import unicodedata

MAX_QUOTED = 600  # characters of one message field or table cell; a few hundred is enough to act on
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str, limit: int = MAX_QUOTED) -> str:
    """`text` with every control, format or line-separator character written as an escape (`\\x1b`,
    `\\n`, `\\u202e`), cut to `limit` characters with a note of how many were left out."""
    head = text[:limit]
    escaped = "".join(_escape(ch) for ch in head)
    if len(text) > limit:
        escaped += f"... ({len(text) - limit:,} more characters)"
    return escaped


def _escape(ch: str) -> str:
    if ch in _NAMED:
        return _NAMED[ch]
    if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch
