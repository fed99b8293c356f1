"""Input sizes, halos and the BioImage.IO 0.5 axes of an exported entry."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..settings.networks import SizeRule

if TYPE_CHECKING:
    from ..entry import Entry

# The space units BioImage.IO 0.5 accepts are SI lengths spelt out; common short forms are mapped.
UNIT_ALIASES = {"um": "micrometer", "µm": "micrometer", "μm": "micrometer", "micron": "micrometer",
                "microns": "micrometer", "nm": "nanometer", "mm": "millimeter", "m": "meter"}


@dataclass(frozen=True)
class AxisSize:
    """One exported space axis: valid input sizes `min + k * step` (step 0: fixed) and the output halo."""

    id: str
    min: int
    step: int
    halo: int
    field: int = 0
    """The network's receptive-field radius along this axis (the halo covers it unless capped)."""

    @property
    def rule(self) -> SizeRule:
        return SizeRule(min=self.min, step=self.step)


def export_sizes(entry: Entry, net: Any) -> list[AxisSize]:
    """Per space axis (z, y, x order): the exported minimum, step and halo.

    The halo is the network's measured receptive-field radius (see `mmv_zoo.predict.halo`),
    the same one `mmv-zoo predict` crops its tiles by, so tiling consumers reproduce its output.
    The minimum is raised above the network's own minimum to the smallest valid size that still
    leaves at least one pixel after cropping the halo from both sides (BioImage.IO requires it).
    """
    from ..predict.halo import entry_halo

    rules = entry.mmv.network.size_rule(entry.spatial_dims)
    ids = [a.id for a in entry.inputs[0].space_axes]
    halos, radii = entry_halo(entry, net)
    sizes = []
    for axis_id, rule, halo, radius in zip(ids, rules, halos, radii, strict=True):
        low = rule.fit(2 * halo + 1) if halo else rule.min
        sizes.append(AxisSize(id=axis_id, min=low, step=rule.step, halo=halo, field=radius))
    return sizes


def bioimageio_unit(unit: str | None) -> tuple[str | None, str | None]:
    """(unit BioImage.IO accepts or None, note when the entry's unit had to be dropped)."""
    if unit is None:
        return None, None
    from bioimageio.spec.model import v0_5

    valid = _literal_values(v0_5.SpaceInputAxis.model_fields["unit"].annotation)
    name = UNIT_ALIASES.get(unit.strip(), unit.strip().lower())
    if name in valid:
        return name, None
    return None, f"unit {unit!r} is not a BioImage.IO space unit; left out of the axes"


def _literal_values(annotation: Any) -> set[str]:
    import typing

    out: set[str] = set()
    for arg in typing.get_args(annotation) or ():
        if typing.get_origin(arg) is typing.Literal:
            out.update(typing.get_args(arg))
        else:
            out |= _literal_values(arg)
    return out


def channel_names(names: list[str]) -> list[str]:
    """Channel names as safe identifiers (letters, digits, underscores)."""
    return [re.sub(r"\W+", "_", n).strip("_") or f"channel{i}" for i, n in enumerate(names)]


def input_axes(entry: Entry, sizes: list[AxisSize], notes: list[str], concatenable: bool = True) -> list[Any]:
    """Batch, channel and space axes of the exported input (scale and unit from the entry).

    Space axes state `concatenable` (the spec's flag for "may be predicted block by block"): true for
    a network, whose tiles the halo stitches seamlessly; false for a model that clusters its input
    into instance labels, which only a whole image gives consistently."""
    from bioimageio.spec.model import v0_5

    tensor = entry.inputs[0]
    axes: list[Any] = [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=channel_names(tensor.channel_names))]
    for axis, size in zip(tensor.space_axes, sizes, strict=True):
        unit, note = bioimageio_unit(axis.unit)
        if note:
            notes.append(f"inputs[0].axes[{axis.id}]: {note}")
        shape = v0_5.ParameterizedSize(min=size.min, step=size.step) if size.step else size.min
        axes.append(v0_5.SpaceInputAxis(id=v0_5.AxisId(axis.id), size=shape, scale=axis.scale, unit=unit,
                                        description=axis.description or "", concatenable=concatenable))
    return axes


def output_axes(entry: Entry, sizes: list[AxisSize], labels: bool = False) -> list[Any]:
    """Output axes: same space sizes, scale and unit as the input (referenced), with the halo; a
    `labels` output (instance labels clustered in the model) has one channel."""
    from bioimageio.spec.model import v0_5

    inp = entry.inputs[0]
    names = ["labels"] if labels else channel_names(entry.outputs[0].channel_names)
    axes: list[Any] = [v0_5.BatchAxis(), v0_5.ChannelAxis(channel_names=names)]
    for axis, size in zip(inp.space_axes, sizes, strict=True):
        unit, _ = bioimageio_unit(axis.unit)
        ref = v0_5.SizeReference(tensor_id=v0_5.TensorId(inp.id), axis_id=v0_5.AxisId(axis.id))
        common = dict(id=v0_5.AxisId(axis.id), size=ref, scale=axis.scale, unit=unit)
        if size.halo:
            axes.append(v0_5.SpaceOutputAxisWithHalo(halo=size.halo, **common))
        else:
            axes.append(v0_5.SpaceOutputAxis(**common))
    return axes
