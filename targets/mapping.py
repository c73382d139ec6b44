"""Reading, writing and checking mapping files: an Assignment against a model and a target.

The mapping is the one artefact a user may write by hand (`--mapping`), so everything it can get
wrong is checked here, at the boundary, and reported with code E310.
"""

from __future__ import annotations

import collections.abc as cabc
from os import PathLike
from pathlib import Path

from odimo.ir.assignment import Assignment, mapping_error
from odimo.ir.geometry import LayerGeometry
from odimo.targets.base import LayerSupport, Role, Target

# A mapping holds one CU name per output channel: a ResNet-50 needs ~300 KB. A bigger file is a
# wrong file, refused before it is read (a 100 MB one made a 281 MB error message).
MAX_MAPPING_BYTES = 16 << 20


def load_mapping(path: str | PathLike[str]) -> Assignment:
    try:
        size = Path(path).stat().st_size
        if size > MAX_MAPPING_BYTES:
            raise mapping_error(
                f"the mapping file is {size:,} bytes, more than the {MAX_MAPPING_BYTES:,} a mapping can need",
                str(path),
                "pass the mapping.json odimo-compile wrote, or a baseline name",
            )
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise mapping_error(f"cannot read the mapping file ({exc})", str(path)) from None
    return Assignment.from_json(text, source=str(path))


def save_mapping(mapping: Assignment, path: str | PathLike[str]) -> None:
    Path(path).write_text(mapping.to_json(), encoding="utf-8")


def validate_mapping(
    mapping: Assignment,
    layers: cabc.Sequence[LayerGeometry],
    target: Target,
    contiguous_layers: cabc.Mapping[str, str] | None = None,
) -> Assignment:
    """Check `mapping` against the analysed layers and return it with fixed layers filled in.

    `contiguous_layers` names layers whose channels are coupled (residual stream, graph output...)
    and the node that couples them: their split must give each CU one range, in CU order. Every
    problem is reported at once, in one MappingError.
    """
    if mapping.target != target.name:
        raise mapping_error(
            f"the mapping is for target '{mapping.target}', not '{target.name}'",
            "mapping",
            fix=f"compile with --target {mapping.target}, or write a mapping for {target.name}",
        )
    known = {layer.name for layer in layers}
    problems = [
        (name, f"layer '{name}' is not a costed layer of the model") for name in mapping.layers if name not in known
    ]
    full: dict[str, tuple[str, ...]] = {}
    for layer in layers:
        support = target.support(layer)
        cus = mapping.layers.get(layer.name)
        if cus is None:
            if support.role is Role.SEARCHABLE:
                problems.append((layer.name, f"searchable layer '{layer.name}' is missing"))
            elif support.role is Role.FIXED:
                full[layer.name] = support.cus * layer.c_out
            continue
        coupling = (contiguous_layers or {}).get(layer.name)
        found = _layer_problems(layer, cus, support, target, coupling)
        problems += [(layer.name, what) for what in found]
        if not found:
            full[layer.name] = cus
    if problems:
        raise mapping_error(
            "; ".join(what for _, what in problems),
            "layers " + ", ".join(dict.fromkeys(f"'{name}'" for name, _ in problems)),
            fix="fix or remove these entries (odimo-inspect lists the layers and the CUs each can use)",
        )
    return Assignment(target.name, full)


def _layer_problems(
    layer: LayerGeometry,
    cus: tuple[str, ...],
    support: LayerSupport,
    target: Target,
    coupling: str | None,
) -> list[str]:
    name = layer.name
    if support.role is Role.HOST:
        return [f"layer '{name}' runs whole on the host ({support.reason}) and cannot be mapped"]
    if len(cus) != layer.c_out:
        return [f"layer '{name}' has {layer.c_out} output channels, the mapping gives {len(cus)}"]
    unable = sorted(set(cus) - set(support.cus), key=cus.index)
    if unable:
        return [
            f"layer '{name}' uses unknown CU '{cu}' (target {target.name} has {', '.join(target.cus)})"
            if cu not in target.cus
            else f"CU '{cu}' cannot run layer '{name}' ({support.reason}); CUs that can: {', '.join(support.cus)}"
            for cu in unable
        ]
    if _is_prefix_split(cus, target):
        return []
    if target.contiguous and support.role is Role.SEARCHABLE:
        return [
            f"layer '{name}' has a non-contiguous split: on {target.name} the channels must be "
            f"{' then '.join(target.cus)}, each one range"
        ]
    if coupling is not None:
        return [f"layer '{name}' must give each CU one range, in the order {', '.join(target.cus)}, because {coupling}"]
    return []


def _is_prefix_split(cus: tuple[str, ...], target: Target) -> bool:
    order = [target.cus.index(cu) for cu in cus]
    return all(a <= b for a, b in zip(order, order[1:]))
