"""How to predict (`Options`) and what to predict of each file (`Selection`): strict models whose field
docstrings are also the help of `mmv-zoo predict`'s options (written once, shown everywhere).
`Selection.parse` reads the command line's spellings (`--t 3:5`, `--channels 0,dna`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationError

from ..errors import DataError
from .strict import Strict


class Options(Strict):
    """How to predict: tiling, test-time augmentation and post-processing."""

    probabilities: bool = False
    """Segmentation: write class probabilities, not labels (instances: the raw embeddings)."""
    threshold: float | None = None
    """Segmentation: foreground where its probability >= this (2 classes; more: argmax, background where
    the top probability is below it); regression: a 0/1 mask of output > this (BioImage.IO's binarize);
    instances: the seed threshold."""
    overlap: float = Field(default=0.0, ge=0.0, le=0.9)
    """Extra blended overlap between tiles, as a fraction of a tile (tiles already overlap by the
    network's receptive field, which makes tiling exact; this only matters for networks whose field
    was capped)."""
    blend: Literal["cosine", "gaussian", "flat"] = "cosine"
    """Weights of overlapping tiles where they are blended."""
    tta: bool = False
    """Test-time augmentation: average over flips of the space axes (2^dims passes)."""
    budget: int | None = Field(default=None, gt=0)
    """Input voxels per tile (default: what the device's memory holds for this network, see
    predict.memory; MMV_ZOO_TILE_MEMORY sets the memory, e.g. 4GiB)."""
    batch_size: int = Field(default=1, ge=1)
    """Tiles per forward pass."""
    direction: str | None = None
    """CycleGAN runs: a2b (the entry's inputs to its outputs; default) or b2a."""
    border: Literal["image", "mirror"] | None = None
    """What tiles see past the image border: image (nothing: the result equals one pass of the network
    over the image; default for runs) or mirror (the image mirrored by the halo, as bioimageio.core
    predicts; default for packages and entries)."""
    halo: list[int] | None = None
    """Pixels each tile is cropped by per space axis (z, y, x or y, x; one value for all); default: the
    network's measured receptive field, which makes tiling exact. Smaller is faster and approximate."""

    @classmethod
    def checked(cls, **values: object) -> Options:
        """Options from the command line; DataError naming the option (`--border`) otherwise."""
        return _checked(cls, values)


def halo_per_axis(halo: list[int] | None, axes: list[str]) -> list[int] | None:
    """`--halo` with one value per space axis in `axes` (a single value applies to each); DataError else."""
    if halo is None:
        return None
    each = halo * len(axes) if len(halo) == 1 else halo
    if len(each) != len(axes) or min(each) < 0:
        raise DataError(f"--halo {halo}: give one value >= 0, or {len(axes)}, one per space axis {axes}")
    return list(each)


def _span(name: str, value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        if ":" in value:
            a, b = value.split(":", 1)
            return int(a), int(b)
        return int(value), int(value) + 1
    except ValueError:
        raise DataError(f"{name} {value!r}: expected START:STOP or one index, e.g. 0:5 or 3") from None


def _items(value: str | None) -> list[int | str] | None:
    if not value:
        return None
    return [int(v.strip()) if v.strip().isdigit() else v.strip() for v in value.split(",")]


class Selection(Strict):
    """What to predict of each file: channels, time points, z planes, scenes, and the output format."""

    channels: list[int | str] | None = None
    """Input channels by index or name, e.g. 0 or 0,2 or dna."""
    t: tuple[int, int] | None = None
    """Time points START:STOP (or one, e.g. 3); default all."""
    z: tuple[int, int] | None = None
    """Z planes START:STOP (or one); default all."""
    scenes: list[int | str] | None = None
    """Scenes by index or id, comma-separated; default all (one output per scene)."""
    format: Literal["auto", "ome-tiff", "ome-zarr"] = "auto"
    """auto (OME-Zarr above 2 GiB of output, else OME-TIFF), ome-tiff or ome-zarr."""

    @classmethod
    def parse(cls, channels: str | None = None, t: str | None = None, z: str | None = None,
              scenes: str | None = None, format: str = "auto") -> Selection:
        """From the command line's spellings: `0,2,dna`, `3:5` or `3`, `0,scene_b`; DataError naming the
        option otherwise."""
        if format not in ("auto", "ome-tiff", "ome-zarr"):
            raise DataError(f"--format {format!r}: choose auto, ome-tiff or ome-zarr")
        return cls(channels=_items(channels), t=_span("--t", t), z=_span("--z", z), scenes=_items(scenes),
                   format=format)  # type: ignore[arg-type]


def _checked(model: type[Strict], values: dict[str, object]) -> Strict:
    try:
        return model(**values)
    except ValidationError as e:
        first = e.errors()[0]
        option = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "options"
        raise DataError(f"{option} {values.get(str(first['loc'][0]))!r}: {first['msg']}") from None
