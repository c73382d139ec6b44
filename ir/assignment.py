"""The channel-to-CU assignment and its mapping-file text (onnx-io.md §5).

A record every stage after the search reads; its file form is the one artefact a user may write by
hand (`--mapping`), so parsing errors are reported here with code E310. Checking an assignment
against a model and a target is the target's business (targets/mapping.py).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

from odimo.ir.errors import MappingError

SCHEMA = "odimo.mapping/1"


@dataclass(frozen=True)
class Assignment:
    """`layers[name][c]` is the CU of original output channel c of layer `name`: the one value a
    search, a baseline or a mapping file produces, and every later stage reads."""

    target: str
    layers: dict[str, tuple[str, ...]]

    def split(self, layer: str) -> dict[str, int]:
        """Channels per CU of `layer` (only CUs that have some)."""
        return dict(Counter(self.layers[layer]))

    def to_json(self) -> str:
        """The §5 file text: layer names sorted, one layer per line, so two mappings diff well."""
        lines = [f"    {json.dumps(name)}: {json.dumps(list(self.layers[name]))}" for name in sorted(self.layers)]
        body = "{\n" + ",\n".join(lines) + "\n  }" if lines else "{}"
        return (
            f'{{\n  "schema": {json.dumps(SCHEMA)},\n  "target": {json.dumps(self.target)},\n  "layers": {body}\n}}\n'
        )

    @classmethod
    def from_json(cls, text: str, source: str = "mapping") -> Assignment:
        """Parse §5 text; `source` (a file name) is where errors point."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise mapping_error(f"not JSON ({exc})", source) from None
        except RecursionError:  # json recurses per nesting level; a mapping is 3 levels deep
            raise mapping_error("the JSON is nested too deeply to be a mapping", source) from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            found = data.get("schema") if isinstance(data, dict) else type(data).__name__
            raise mapping_error(f"schema is {found!r}, expected {SCHEMA!r}", source)
        target, layers = data.get("target"), data.get("layers")
        if not isinstance(target, str):
            raise mapping_error('"target" must be a target name', source)
        if not isinstance(layers, dict):
            raise mapping_error('"layers" must map layer names to lists of CU names', source)
        for name, cus in layers.items():
            if not isinstance(cus, list) or not all(isinstance(cu, str) for cu in cus):
                raise mapping_error(f"layer '{name}' must map to a list of CU names", source)
        return cls(target, {name: tuple(cus) for name, cus in layers.items()})


def mapping_error(what: str, where: str, fix: str = "") -> MappingError:
    fix = fix or f"write the {SCHEMA} format: onnx-io.md §5, or a mapping odimo-compile saved"
    return MappingError(what, where=where, fix=fix)
