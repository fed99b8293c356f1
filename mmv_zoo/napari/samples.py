"""Sample data: the BBBC007 image mmv_zoo's nuclei models never trained on, with its labels."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..io.read import read_image

BBBC007 = Path(__file__).resolve().parents[1] / "sample_data" / "bbbc007" / "holdout"
"""Ljosa et al., Nature Methods 2012, image set BBBC007v1 (CC BY 3.0); see sample_data/bbbc007/SOURCE.md."""


def bbbc007() -> list[tuple[Any, dict[str, Any], str]]:
    """The held-back BBBC007 image (DNA stain) and its nucleus labels, as napari layer data."""
    (image_path,) = sorted((BBBC007 / "images").glob("*.tif"))
    image = read_image(image_path, 2)
    labels = read_image(BBBC007 / "labels" / image_path.name, 2)
    name = f"BBBC007 {image_path.stem}"
    return [(image.data[0], {"name": name}, "image"), (labels.data[0], {"name": f"{name} labels"}, "labels")]
