"""Stand-ins of the public datasets zoo recipes download (see tests/data_archives.py for the contract)."""

from __future__ import annotations

from collections.abc import Callable

BUILDERS: dict[str, Callable[[str], dict[str, bytes]]] = {}
