"""`--set a.b=c` overrides: YAML values written into a copy of an entry's data before validation."""

from __future__ import annotations

import copy
from typing import Any

import yaml

from ..errors import EntryError


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise EntryError(f"--set {item!r}: expected KEY.PATH=VALUE, e.g. training.max_epochs=5")
    key, raw = item.split("=", 1)
    if not key or any(not part for part in key.split(".")):
        raise EntryError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str], root_keys: Any = ()) -> dict[str, Any]:
    """Return a copy of `data` with `a.b=c` overrides applied (YAML values; paths relative to the
    entry root when the first key is one of `root_keys`, else to `config.mmv_zoo`)."""
    out = copy.deepcopy(data)
    for item in overrides:
        keys, value = _parse_override(item)
        if keys[0] not in root_keys:
            keys = ["config", "mmv_zoo", *keys]
        node: Any = out
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                if not k.isdigit() or int(k) >= len(node):
                    where = ".".join(keys[: i + 1])
                    raise EntryError(f"--set {item!r}: {where} is not an index of a list of {len(node)}")
                node = node[int(k)]
            else:
                if not isinstance(node.get(k, {}), dict | list):
                    raise EntryError(f"--set {item!r}: {'.'.join(keys[: i + 1])} is a value, not a section")
                node = node.setdefault(k, {})
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise EntryError(f"--set {item!r}: {last} is not an index of a list of {len(node)}")
            node[int(last)] = value
        else:
            node[last] = value
    return out
