"""Per-axis size helpers shared by network settings and builders (no torch import)."""

from __future__ import annotations

PerAxis = int | list[int]
"""One number for every spatial axis, or one per axis (z, y, x order)."""


def per_axis(value: PerAxis, spatial_dims: int) -> list[int]:
    """Expand an int or list to one value per spatial axis."""
    if isinstance(value, int):
        return [value] * spatial_dims
    if len(value) != spatial_dims:
        raise ValueError(f"has {len(value)} values but the entry has {spatial_dims} spatial axes")
    return list(value)
