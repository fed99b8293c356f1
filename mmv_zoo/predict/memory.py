"""How large a tile may be: the network's activation memory per voxel against the memory the device
can spare, so that big tiles (few halos to recompute) are used wherever they fit.

The activation memory is estimated once per network from one small forward pass: the largest
output of any layer per input voxel, times ACTIVATION_FACTOR (the live tensors at the peak of a
UNet-like pass: input, output and skip connections; measured peak resident memory per voxel on the
CPU: fnet 3D x8 150 B, x16 275-296 B, x32 612 B, i.e. 4.6-4.8 times the largest layer output).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from typing import Any

from ..errors import DataError

ACTIVATION_FACTOR = 5.0
CPU_SHARE = 0.4
"""Share of the available memory (MemAvailable) tiles may take on the CPU."""
GPU_SHARE = 0.6
"""Share of the free GPU memory tiles may take."""
MAX_BYTES = 8 * 2**30
"""At most this much for tiles unless MMV_ZOO_TILE_MEMORY says otherwise."""
FALLBACK_BYTES = 2 * 2**30
"""When the available memory cannot be read."""
ENV = "MMV_ZOO_TILE_MEMORY"

_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6, "mib": 2**20,
          "g": 2**30, "gb": 10**9, "gib": 2**30}
_per_voxel: dict[Any, float] = {}


def parse_bytes(text: str) -> int:
    """'8GiB', '512 MiB', '2e9' -> bytes."""
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{text!r}: expected a size such as 8GiB, 512MiB or a number of bytes")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


def bytes_per_voxel(net: Any, in_channels: int, probe: Sequence[int], key: Any = None) -> float:
    """Estimated peak activation bytes per input voxel of `net` (float32), from one pass on a `probe`
    input (a valid size); remembered per `key`."""
    if key is not None and key in _per_voxel:
        return _per_voxel[key]
    import torch

    largest = 0

    def hook(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal largest
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if isinstance(t, torch.Tensor):
                largest = max(largest, t.numel() * t.element_size())

    handles = [m.register_forward_hook(hook) for m in net.modules()]  # containers too: a wrapper that
    # calls its child's function itself (fast.py's OneDnnConv, CatConv) gives its output only there
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        with torch.inference_mode():
            net(torch.zeros(1, in_channels, *probe, device=device))
    finally:
        for h in handles:
            h.remove()
    value = ACTIVATION_FACTOR * max(largest, 4 * in_channels * math.prod(probe)) / math.prod(probe)
    if key is not None:
        _per_voxel[key] = value
    return value


def tile_memory(device: str = "cpu") -> int:
    """Bytes the tiles of one batch may take: MMV_ZOO_TILE_MEMORY, else a share of what the device has
    available (at most MAX_BYTES)."""
    if os.environ.get(ENV):
        try:
            return parse_bytes(os.environ[ENV])
        except ValueError as e:
            raise DataError(f"{ENV}: {e}") from None
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return min(int(GPU_SHARE * free), MAX_BYTES)
    available = _available_memory()
    return FALLBACK_BYTES if available is None else min(int(CPU_SHARE * available), MAX_BYTES)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return None


def probe_size(entry: Any) -> list[int]:
    """A small valid input size of `entry`'s network (per space axis) for probing it."""
    return [r.fit(max(r.min, 2 * r.step, 16)) for r in entry.mmv.network.size_rule(entry.spatial_dims)]


def voxel_budget(net: Any, entry: Any, batch_size: int = 1, device: str = "cpu") -> int:
    """Input voxels per tile for `entry`'s network `net` on `device`, `batch_size` tiles at a time."""
    probe = probe_size(entry)
    per_voxel = bytes_per_voxel(net, entry.in_channels, probe, key=(entry.mmv.network.model_dump_json(),
                                                                      entry.in_channels, device))
    return max(1, int(tile_memory(device) / (per_voxel * max(1, batch_size))))
