"""The BioImage.IO preprocessing equivalent of an entry's source normalization."""

from __future__ import annotations

from typing import Any

from ..transforms.normalize import EPS, mask_cutoff

CENTER_NOTE = (
    "The entry normalizes inputs with 'center' normalization (zero mean, unit variance with statistics "
    "from the {z_chunk} central z slices). BioImage.IO has no such preprocessing, so the package uses "
    "zero_mean_unit_variance over the whole image instead: identical for stacks of at most {z_chunk} "
    "slices, an approximation for deeper stacks."
)

MACENKO_REFUSAL = (
    "config.mmv_zoo.data.normalization.source: kind macenko (stain normalization) has no BioImage.IO "
    "preprocessing, so an exported package would see un-normalized inputs; not exported (predict with "
    "`mmv-zoo predict RUN`, or normalize the images before giving them to a package)"
)


def check_exportable(norm: Any) -> None:
    """Raise ExportError if the source normalization `norm` has no BioImage.IO equivalent."""
    if norm.kind == "macenko":
        from . import ExportError

        raise ExportError(MACENKO_REFUSAL)


def preprocessing_steps(norm: Any, space_axes: list[str]) -> tuple[list[Any], list[str]]:
    """(BioImage.IO 0.5 preprocessing descriptions, notes on approximations) for `norm`.

    `norm` is the entry's `config.mmv_zoo.data.normalization.source`; statistics are taken per
    sample and channel over `space_axes`, as mmv_zoo's own normalization does.
    """
    check_exportable(norm)
    from bioimageio.spec.model import v0_5

    axes = [v0_5.AxisId(a) for a in space_axes]
    steps: list[Any] = [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32"))]
    notes: list[str] = []
    if norm.kind == "percentile":
        steps.append(v0_5.ScaleRangeDescr(kwargs=v0_5.ScaleRangeKwargs(
            axes=axes, min_percentile=norm.lower, max_percentile=norm.upper, eps=EPS)))
        if norm.clip:
            steps.append(v0_5.ClipDescr(kwargs=v0_5.ClipKwargs(min=0.0, max=1.0)))
        if norm.range == "-1,1":
            steps.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=2.0, offset=-1.0)))
    elif norm.kind == "standard":
        steps.append(v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=axes, eps=EPS)))
    elif norm.kind == "center":
        steps.append(v0_5.ZeroMeanUnitVarianceDescr(kwargs=v0_5.ZeroMeanUnitVarianceKwargs(axes=axes, eps=EPS)))
        notes.append(CENTER_NOTE.format(z_chunk=norm.z_chunk))
    elif norm.kind == "foreground":  # x > 0 -> 1, else 0 (binarize gives booleans: back to float32)
        steps.append(v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=0.0)))
        steps.append(v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="float32")))
        if norm.range == "-1,1":
            steps.append(v0_5.ScaleLinearDescr(kwargs=v0_5.ScaleLinearKwargs(gain=2.0, offset=-1.0)))
    elif norm.kind != "none":  # pragma: no cover - the schema rejects other kinds
        raise ValueError(f"unknown normalization {norm.kind!r}")
    return steps, notes


def mask_threshold(entry: Any) -> float | None:
    """The package outputs a 0/1 mask, cut at this value, when the entry's output is a mask domain."""
    return mask_cutoff(entry.mmv.task, entry.mmv.data.normalization.target)


def mask_postprocessing(threshold: float) -> list[Any]:
    """BioImage.IO postprocessing that turns the generated mask values into a 0/1 uint8 mask."""
    from bioimageio.spec.model import v0_5

    return [v0_5.BinarizeDescr(kwargs=v0_5.BinarizeKwargs(threshold=threshold)),
            v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="uint8"))]
