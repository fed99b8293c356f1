"""The zoo entry: BioImage.IO model-RDF 0.5 fields plus `config: mmv_zoo:`.

`load_entry` finds an entry (bundled name, folder or rdf.yaml), applies `--set a.b=c` overrides and
validates everything; every problem becomes an `EntryError` naming the file and the field.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from .errors import EntryError
from .settings.config import MmvZooSettings
from .settings.framework import check_framework, framework_spec
from .settings.messages import format_validation_error
from .settings.overrides import apply_overrides
from .settings.strict import Strict
from .settings.training import REGRESSION_LOSSES, SEGMENTATION_LOSSES

ZOO_DIR = Path(__file__).parent / "zoo"
RDF_NAME = "rdf.yaml"
RUN_INFO = "run.json"
"""The record of a run folder (`mmv_zoo.run`): a resolved entry beside one is named by its `entry`."""


class Author(Strict):
    name: str
    affiliation: str | None = None
    email: str | None = None
    github_user: str | None = None
    orcid: str | None = None


class Cite(Strict):
    text: str
    doi: str | None = None
    url: str | None = None


class BatchAxis(Strict):
    type: Literal["batch"]


class ChannelAxis(Strict):
    type: Literal["channel"]
    channel_names: list[str] = Field(min_length=1)
    """One name per channel; its length is the number of channels."""


class SpaceAxis(Strict):
    type: Literal["space"]
    id: Literal["z", "y", "x"]
    unit: str | None = None
    scale: float = Field(default=1.0, gt=0)
    """Physical size of a pixel along this axis (in `unit`)."""
    description: str | None = None


Axis = Annotated[BatchAxis | ChannelAxis | SpaceAxis, Field(discriminator="type")]


class Tensor(Strict):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    description: str = ""
    axes: list[Axis]

    @model_validator(mode="after")
    def _axes_order(self) -> Tensor:
        kinds = [a.type for a in self.axes]
        if kinds[:2] != ["batch", "channel"]:
            raise ValueError("axes must start with a batch and a channel axis")
        space = [a.id for a in self.axes[2:] if isinstance(a, SpaceAxis)]
        if len(space) != len(self.axes) - 2 or space not in (["y", "x"], ["z", "y", "x"]):
            raise ValueError(f"space axes must be [y, x] or [z, y, x] after batch and channel, got {space}")
        return self

    @property
    def channel_names(self) -> list[str]:
        return self.axes[1].channel_names  # type: ignore[union-attr]

    @property
    def space_axes(self) -> list[SpaceAxis]:
        return [a for a in self.axes if isinstance(a, SpaceAxis)]


class EntryConfig(Strict):
    model_config = ConfigDict(extra="allow")  # other tools may keep their own config keys
    mmv_zoo: MmvZooSettings


class Entry(Strict):
    """A zoo entry: what the model is (BioImage.IO fields) and how it is trained (config.mmv_zoo)."""

    type: Literal["model"] = "model"
    format_version: str = Field(default="0.5.4", pattern=r"^0\.5\.\d+$")
    name: str = Field(min_length=5, max_length=128)
    """Letters, digits, spaces and `_ + - ( )` only (BioImage.IO refuses other characters on export)."""
    description: str = Field(max_length=1024)
    authors: list[Author] = Field(min_length=1)
    cite: list[Cite] = Field(min_length=1)
    license: str
    tags: list[str] = []
    documentation: str | None = None
    covers: list[str] = []
    version: str | None = None
    id: str | None = None
    git_repo: str | None = None
    links: list[str] = []
    training_data: dict[str, Any] | None = None
    inputs: list[Tensor] = Field(min_length=1, max_length=1)
    outputs: list[Tensor] = Field(min_length=1, max_length=1)
    config: EntryConfig
    _source: Path | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _bioimageio_name(cls, v: str) -> str:
        bad = sorted({c for c in v if not (c.isascii() and (c.isalnum() or c in "_+- ()"))})
        if bad:
            raise ValueError(f"{v!r} contains {' '.join(repr(c) for c in bad)}; a BioImage.IO name may only hold "
                             "letters, digits, spaces and _ + - ( )")
        return v

    @property
    def source(self) -> Path | None:
        """The rdf.yaml this entry was loaded from (None when built in memory)."""
        return self._source

    @property
    def slug(self) -> str:
        """Short name: the entry's folder name (a file not named rdf.yaml: its stem; a run's resolved
        entry: the entry the run trained, from the run.json beside it), else its `id`, else its name in
        snake case."""
        if self._source is not None:
            if self._source.name != RDF_NAME:
                return self._source.stem  # my_entries/nuclei_v2.yaml -> nuclei_v2
            run_info = self._source.parent / RUN_INFO
            if run_info.is_file():
                with contextlib.suppress(OSError, ValueError, KeyError):
                    return str(json.loads(run_info.read_text())["entry"])
            return self._source.parent.name
        return self.id or "_".join(self.name.lower().split())

    @property
    def mmv(self) -> MmvZooSettings:
        return self.config.mmv_zoo

    @property
    def spatial_dims(self) -> int:
        return len(self.inputs[0].space_axes)

    @property
    def in_channels(self) -> int:
        return len(self.inputs[0].channel_names)

    @property
    def out_channels(self) -> int:
        return len(self.outputs[0].channel_names)

    @model_validator(mode="before")
    @classmethod
    def _weights_live_in_pretrained(cls, data: Any) -> Any:
        if isinstance(data, dict) and "weights" in data:
            raise ValueError("weights: an entry names its pretrained package under config.mmv_zoo.pretrained "
                             "(source, sha256); `weights` is written by the export into the package")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Entry:
        """Rules that span sections; each message starts with the field it concerns."""
        mmv = self.mmv
        dims = self.spatial_dims
        in_ids = [a.id for a in self.inputs[0].space_axes]
        out_ids = [a.id for a in self.outputs[0].space_axes]
        if in_ids != out_ids:
            raise ValueError(f"outputs[0].axes: space axes {out_ids} differ from inputs[0].axes {in_ids}")
        net = mmv.network
        if net.spatial_dims is not None and net.spatial_dims != dims:
            raise ValueError(
                f"config.mmv_zoo.network.spatial_dims: {net.spatial_dims}D network, but inputs[0].axes "
                f"has {dims} space axes {in_ids}"
            )
        try:
            net.check_dims(dims)
        except ValueError as e:
            raise ValueError(f"config.mmv_zoo.network ({net.kind}): {e}") from None
        patch = mmv.data.patch
        if len(patch) != dims:
            raise ValueError(
                f"config.mmv_zoo.data.patch: {patch} has {len(patch)} values, the axes {in_ids} need {dims}"
            )
        rules = net.size_rule(dims)
        bad = [(p, r.fit(p)) for p, r in zip(patch, rules, strict=True) if r.fit(p) != p]
        if bad:
            valid = [r.fit(p) for p, r in zip(patch, rules, strict=True)]
            raise ValueError(
                f"config.mmv_zoo.data.patch: {patch} does not fit the {net.kind} network "
                f"(sizes min + k*step with min/step {[(r.min, r.step) for r in rules]}); e.g. use {valid}"
            )
        check_framework(self, framework_spec(mmv.framework))  # its tasks, losses, layouts and own rules
        loss = mmv.loss.kind
        if mmv.task == "segmentation":
            if loss not in SEGMENTATION_LOSSES:
                raise ValueError(
                    f"config.mmv_zoo.loss.kind: {loss!r} is a regression loss; "
                    f"segmentation takes {list(SEGMENTATION_LOSSES)}"
                )
            if self.out_channels < 2:
                raise ValueError(
                    "outputs[0].axes: segmentation needs channel_names for 2 or more classes (background first)"
                )
            if mmv.data.normalization.target.kind != "none":
                raise ValueError(
                    "config.mmv_zoo.data.normalization.target: segmentation targets are class ids, use kind: none"
                )
        elif mmv.task == "regression" and loss not in REGRESSION_LOSSES:
            raise ValueError(
                f"config.mmv_zoo.loss.kind: {loss!r} is a segmentation loss; "
                f"regression takes {list(REGRESSION_LOSSES)}"
            )
        if mmv.data.normalization.source.kind == "center" and dims != 3:
            raise ValueError("config.mmv_zoo.data.normalization.source: center normalization needs a z axis")
        for side, channels in (("source", self.in_channels), ("target", self.out_channels)):
            if getattr(mmv.data.normalization, side).kind == "macenko" and channels != 3:
                tensor = "inputs[0]" if side == "source" else "outputs[0]"
                raise ValueError(f"config.mmv_zoo.data.normalization.{side}: macenko stain normalization needs "
                                 f"RGB images, {tensor} has {channels} channel(s)")
        weights = getattr(mmv.loss, "class_weights", None)
        if weights is not None and len(weights) != self.out_channels:
            raise ValueError(
                f"config.mmv_zoo.loss.class_weights: {len(weights)} values for {self.out_channels} classes"
            )
        return self


# ---------------------------------------------------------------- loading


def bundled_entries() -> list[str]:
    """Names of the entries shipped with mmv_zoo."""
    return sorted(p.parent.name for p in ZOO_DIR.glob(f"*/{RDF_NAME}"))


def resolve_entry_path(ref: str | Path) -> Path:
    """An entry name, a folder with an rdf.yaml or an rdf.yaml file -> the rdf.yaml path."""
    p = Path(ref)
    if p.is_file():
        return p
    if p.is_dir():
        if (p / RDF_NAME).is_file():
            return p / RDF_NAME
        raise EntryError(f"{p}: folder has no {RDF_NAME}")
    if (ZOO_DIR / str(ref) / RDF_NAME).is_file():
        return ZOO_DIR / str(ref) / RDF_NAME
    raise EntryError(f"{ref}: no such file, folder or zoo entry (zoo entries: {', '.join(bundled_entries())})")


def validate_entry_data(data: Any, source: str) -> Entry:
    if not isinstance(data, dict):
        raise EntryError(f"{source}: expected a YAML mapping at the top level")
    try:
        return Entry.model_validate(data)
    except ValidationError as e:
        raise EntryError(format_validation_error(e, source, Entry)) from None


def read_entry_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise EntryError(f"{path}: not valid YAML ({where}{problem})") from None
    except OSError as e:
        raise EntryError(f"{path}: cannot read ({e.strerror})") from None
    except UnicodeDecodeError:
        raise EntryError(f"{path}: not a text YAML file (expected an entry's rdf.yaml)") from None
    if not isinstance(data, dict):
        raise EntryError(f"{path}: expected a YAML mapping at the top level")
    return data


def load_entry(ref: str | Path, overrides: list[str] | None = None) -> Entry:
    """Load, override and validate an entry given by name, folder or rdf.yaml path."""
    path = resolve_entry_path(ref)
    data = apply_overrides(read_entry_yaml(path), overrides or [], Entry.model_fields)
    entry = validate_entry_data(data, str(path) + (" (with --set overrides)" if overrides else ""))
    entry._source = path.resolve()
    return entry


def entry_to_yaml(entry: Entry) -> str:
    """The entry as YAML, defaults filled in (the resolved entry written into each run)."""
    return yaml.safe_dump(entry.model_dump(mode="json", exclude_none=True), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """The JSON schema of entries; each framework's own block is listed under `config.mmv_zoo`."""
    from .settings.framework import framework_specs

    schema = Entry.model_json_schema()
    defs = schema.setdefault("$defs", {})
    mmv = defs["MmvZooSettings"]
    for kind, spec in framework_specs().items():
        if spec.settings is None:
            continue
        block = spec.settings.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(block.pop("$defs", {}))
        defs[spec.settings.__name__] = block
        mmv["properties"][kind] = {"$ref": f"#/$defs/{spec.settings.__name__}",
                                   "description": f"Framework {kind} only: its settings. {spec.description}"}
    return schema
