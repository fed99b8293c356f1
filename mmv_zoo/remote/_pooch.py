"""pooch, imported only when needed (it imports requests), its INFO messages muted while we call it:
they address pooch's users ("Use this value as the 'known_hash' argument of 'pooch.retrieve'"), and
our callers say what happened in their own words. Other users of pooch in the process keep them."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def quiet_pooch() -> Iterator[ModuleType]:
    """`with quiet_pooch() as pooch:` the pooch module, its INFO messages muted inside the block."""
    import pooch

    logger = pooch.get_logger()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield pooch
    finally:
        logger.setLevel(level)
