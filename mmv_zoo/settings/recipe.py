"""Data recipes: where an entry's public training data lives and how to arrange it into the entry's
layout (`config.mmv_zoo.recipe`, run by `mmv-zoo data pull ENTRY --out DIR`).

A recipe names its downloads (URL or Zenodo DOI, sha256 when known) and lists steps that read them
and write image files into folders of the output directory. No heavy imports here.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .strict import Strict

_FOLDER = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _channel_index(v: int | str) -> int | str:
    """A channel: an index (>= 0) or the name of a column holding the index per row."""
    if isinstance(v, int) and v < 0:
        raise ValueError("a channel index must be >= 0")
    return v


def _check_folder(v: str) -> str:
    if not _FOLDER.match(v) or any(p in (".", "..") for p in v.split("/")):
        raise ValueError(f"{v!r} must be a relative folder of letters, digits, '_', '-', '.' and '/' "
                         "(no '..'), e.g. train/source")
    return v


SPAN = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2, max_length=2)]


class FileOps(Strict):
    """Options of the `files` step that change each file's pixels or name (all off by default)."""

    crop: dict[Literal["c", "z", "y", "x"], SPAN] = {}
    """Keep [start, stop) along these axes, e.g. {x: [512, 1024]}: the second 512-pixel panel of a
    side-by-side image (DeepLIIF); {c: [0, 3]} keeps R, G and B of an RGBA image."""
    grey: bool = False
    """RGB (3 channels) -> one luminance channel 0.2125 R + 0.7154 G + 0.0721 B (skimage's rgb2gray
    weights), rounded back to the image's integer type."""
    timepoints: bool = False
    """Write every time point of a time-lapse as its own file `<stem>_t<NNN>` (otherwise: the first)."""
    name_pattern: str | None = None
    """A regular expression searched in each file name: its first group is the output stem, e.g.
    `_([A-P][0-9]{2})_w2_` names a BBBC010 image by its well (A01)."""
    combine: Literal["labels"] | None = None
    """`labels`: files with the same output stem are one object each (any value above 0) and become one
    uint16 instance label image, the k-th file of the stem (by name) giving id k + 1."""
    matching: str | None = None
    """Write only files whose output stem is already in this folder (written by an earlier step), e.g.
    targets that have a source."""

    @field_validator("crop")
    @classmethod
    def _spans(cls, v: dict[str, list[int]]) -> dict[str, list[int]]:
        for axis, (start, stop) in v.items():
            if start >= stop:
                raise ValueError(f"crop.{axis}: start {start} must be below stop {stop}")
        return v

    @field_validator("name_pattern")
    @classmethod
    def _pattern(cls, v: str | None) -> str | None:
        if v is None:
            return v
        try:
            groups = re.compile(v).groups
        except re.error as e:
            raise ValueError(f"{v!r} is not a regular expression ({e})") from None
        if groups < 1:
            raise ValueError(f"{v!r} needs a group, e.g. '_([A-P][0-9]{{2}})_': the group is the output stem")
        return v

    @field_validator("matching")
    @classmethod
    def _matching_folder(cls, v: str | None) -> str | None:
        return v if v is None else _check_folder(v)

    @model_validator(mode="after")
    def _compatible(self) -> FileOps:
        if self.grey and getattr(self, "channel", None) is not None:
            raise ValueError("give grey or channel, not both")
        if self.combine and self.timepoints:
            raise ValueError("combine merges one image per file: it cannot take every time point")
        return self

    def has_ops(self) -> bool:
        """Whether any option of this class is set (the file is then always rewritten)."""
        return bool(self.crop or self.grey or self.timepoints or self.name_pattern or self.combine or self.matching)


class Download(Strict):
    """One file to download: an https URL, or a file of a Zenodo record given by its DOI."""

    url: str | None = None
    """https URL of the file (an archive is extracted safely into the cache)."""
    doi: str | None = Field(default=None, pattern=r"^10\.\d{4,}/\S+$")
    """A Zenodo DOI (10.5281/zenodo.N); `file` names the file of the record."""
    file: str | None = None
    """With `doi`: the file name in the record."""
    sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Expected sha256; when missing the first pull records it (trust on first use)."""
    size: str | None = None
    """Approximate download size for the user, e.g. `2.1 GB`."""

    @model_validator(mode="after")
    def _one_source(self) -> Download:
        if (self.url is None) == (self.doi is None):
            raise ValueError("give exactly one of url and doi")
        if self.doi is not None and not self.file:
            raise ValueError("a doi needs `file`: the file name in the record")
        if self.url is not None and not self.url.startswith(("https://", "http://")):
            raise ValueError(f"url {self.url!r} must start with https://")
        return self


class _Step(Strict):
    source: str
    """Name of the download (a key of `downloads`) the step reads."""


class FilesStep(_Step, FileOps):
    """Image files of a download (members of an archive matching `glob`, or the file itself) written
    into `to`, optionally reduced to one channel and/or max-projected along Z."""

    kind: Literal["files"]
    glob: str = "*"
    """Pattern of the files inside the extracted archive, e.g. `Denoising_Planaria/test_data/GT/*.tif`."""
    to: str
    """Output folder (relative to --out)."""
    strip: str = ""
    """Text removed from each file name's stem, so that targets are named like their sources (GlaS:
    `train_1_anno.bmp` -> `train_1.tif` with strip `_anno`)."""
    channel: int | None = Field(default=None, ge=0)
    """Keep only this channel (index along C, RGB samples included) of each image."""
    project: Literal["max"] | None = None
    """`max`: maximum intensity projection along Z (3D -> 2D)."""
    limit: int | None = Field(default=None, ge=1)
    """At most this many files (sorted by name)."""

    @field_validator("to")
    @classmethod
    def _folder(cls, v: str) -> str:
        return _check_folder(v)


class NpzStep(_Step):
    """Arrays of a NumPy `.npz` file (CARE's `data_label.npz`: X and Y, samples along the first axis)
    written one TIFF per sample: `arrays` maps an array name to an output folder."""

    kind: Literal["npz"]
    member: str
    """Path of the .npz inside the extracted archive (or `.` for the download itself)."""
    arrays: dict[str, str] = Field(min_length=1)
    """Array name -> output folder, e.g. {X: low, Y: high}."""
    channel: int | None = Field(default=0, ge=0)
    """Index along axis 1 (CARE's channel axis) taken from each sample; null keeps every axis."""
    name: str = "img_{i:05d}"
    """File stem of sample i (a Python format string with `i`)."""
    limit: int | None = Field(default=None, ge=1)
    """At most this many samples."""

    @field_validator("arrays")
    @classmethod
    def _folders(cls, v: dict[str, str]) -> dict[str, str]:
        for folder in v.values():
            _check_folder(folder)
        return v


class UnlistedObjects(Strict):
    """Per manifest row, a 0/1 mask of the objects of a label image that the manifest does not list:
    voxels whose label id is above 0 and not among the values of `id_column` in the rows sharing the
    row's `unique` value (all rows matching `where`, before one is kept per value). The Allen
    collection has one row per cell it includes, `this_cell_index` being the cell's id in the FOV's
    cell segmentation, so the mask covers the other cells (e.g. cut by the image border): written
    into an exclusion folder, they are left out of the loss."""

    to: str
    """Output folder of the masks (named like the row's other outputs)."""
    channel: int | str
    """Label channel of the row's image: an index, or the name of a column holding the index per row."""
    id_column: str
    """Column holding the id (label value) of the object each row describes, e.g. this_cell_index."""

    @field_validator("to")
    @classmethod
    def _folder(cls, v: str) -> str:
        return _check_folder(v)

    @field_validator("channel")
    @classmethod
    def _index(cls, v: int | str) -> int | str:
        return _channel_index(v)


class SliceAt(Strict):
    """Per manifest row, one Z slice of every image the row writes (3D -> 2D): the middle of the Z
    extent of a mask's foreground, (first + last slice holding a voxel above 0) // 2. The mask is a
    channel of the row's file in `mask_column`, which may be another file than `path_column` (the
    image and its segmentation then take the same slice when both steps name the same mask)."""

    mask_column: str
    """Column holding the path of the mask's file (like `path_column`: a URL or relative to `base_url`)."""
    mask_channel: int | str = 0
    """Channel of the mask: an index, or the name of a column holding the index per row."""
    at: Literal["middle_of_foreground"] = "middle_of_foreground"

    @field_validator("mask_channel")
    @classmethod
    def _index(cls, v: int | str) -> int | str:
        return _channel_index(v)


class MeanBetween(Strict):
    """Keep a manifest row only if the mean intensity of a channel of its image lies in [low, high]
    (the MMV_Im2Im FBL notebook kept FOVs whose FBL channel averages 450-500)."""

    channel: int | str
    """Channel of the row's image: an index, or the name of a column holding the index per row."""
    range: Annotated[list[float], Field(min_length=2, max_length=2)]
    """[low, high], both kept."""

    @model_validator(mode="after")
    def _order(self) -> MeanBetween:
        if self.range[0] > self.range[1]:
            raise ValueError(f"range {self.range}: low must not be above high")
        return self


class OtherChannel(Strict):
    """A channel of another file of the row (its path in `column`, like `path_column`)."""

    column: str
    channel: int = Field(ge=0)


class DotMask(Strict):
    """Per manifest row, a 0/1 mask of a channel of its image by the Allen Cell Structure Segmenter's
    2D dot filter (`recipe_ops.dot_mask`: auto-contrast normalization, 3D Gaussian smoothing, the
    slice-by-slice LoG spot filter above `cutoff`, objects of fewer than `min_size` voxels removed),
    optionally multiplied by a label channel of another file (as uint8, as the paper's notebook did):
    the mask's voxels then carry their cell's id."""

    to: str
    """Output folder of the masks (named like the row's other outputs)."""
    channel: int | str
    """Channel of the row's image: an index, or the name of a column holding the index per row."""
    scaling: Annotated[list[float], Field(min_length=2, max_length=2)] = [0.5, 18.0]
    """intensity_normalization's scaling_param [a, b]: clip to [mean - a std, mean + b std], to 0..1."""
    smooth_sigma: float = Field(default=1.0, gt=0)
    log_sigma: float = Field(default=1.0, gt=0)
    cutoff: float = 0.01
    min_size: int = Field(default=5, ge=1)
    times: OtherChannel | None = None
    """Multiply the mask by this label channel (cast to uint8 first), e.g. the cell segmentation."""

    @field_validator("to")
    @classmethod
    def _folder(cls, v: str) -> str:
        return _check_folder(v)


class ManifestStep(_Step):
    """A CSV manifest (the Allen Cell hiPSC collection's `metadata.csv`): rows selected by column
    values, each row's image downloaded (cached) and channels of it written into folders. Sources and
    targets in different files (fov_path, fov_seg_path) take one step each."""

    kind: Literal["manifest"]
    where: dict[str, str | list[str]] = {}
    """Column -> required value (or any of a list), e.g. {structure_name: FBL}."""
    unique: str | None = None
    """Keep the first row per value of this column (e.g. FOVId: one row per field of view)."""
    path_column: str
    """Column holding each row's image: an https URL, or a path relative to `base_url`."""
    base_url: str | None = None
    """Prefix of relative paths in `path_column` (ends with /)."""
    name_column: str
    """Column whose value names the output files (e.g. FOVId)."""
    channels: dict[str, int | str] = Field(min_length=1)
    """Output folder -> channel of the row's image: an index, or the name of a column holding the index
    per row (e.g. {brightfield: ChannelNumberBrightfield})."""
    project: Literal["max"] | None = None
    slice: SliceAt | None = None
    """Keep one Z slice per row, chosen from a mask (see SliceAt); not with `project`."""
    limit: int | None = Field(default=None, ge=1)
    """At most this many rows (after `where` and `unique`), so a first try stays small."""
    unlisted: UnlistedObjects | None = None
    """Also write, per row, a mask of the label image's objects that no row lists (needs `unique`)."""
    mean_between: MeanBetween | None = None
    """Skip rows whose image's channel has a mean outside a range (the image is downloaded to tell);
    `limit` then counts the rows kept."""
    dot_mask: DotMask | None = None
    """Also write, per row, a dot-filter mask of a channel of its image (see DotMask)."""

    @field_validator("channels")
    @classmethod
    def _folders(cls, v: dict[str, int | str]) -> dict[str, int | str]:
        for folder, index in v.items():
            _check_folder(folder)
            if isinstance(index, int) and index < 0:
                raise ValueError(f"channel index of {folder!r} must be >= 0")
        return v

    @model_validator(mode="after")
    def _unlisted_needs_groups(self) -> ManifestStep:
        if self.unlisted is not None and self.unique is None:
            raise ValueError("unlisted needs `unique` (the column whose rows list one image's objects, e.g. FOVId)")
        if self.slice is not None and self.project is not None:
            raise ValueError("give slice or project, not both")
        if self.dot_mask is not None and (self.slice is not None or self.project is not None):
            raise ValueError("dot_mask filters the whole stack: not with slice or project")
        return self


class SplitStep(Strict):
    """Move a seeded random share of the files of paired folders (matched by name) into `to/<folder>`,
    e.g. the held-back test images the paper scores on."""

    kind: Literal["split"]
    folders: list[str] = Field(min_length=1)
    to: str = "holdout"
    fraction: float | None = Field(default=None, gt=0, lt=1)
    count: int | None = Field(default=None, ge=1)
    seed: int = 0

    @model_validator(mode="after")
    def _one(self) -> SplitStep:
        if (self.fraction is None) == (self.count is None):
            raise ValueError("give exactly one of fraction and count")
        for folder in (*self.folders, self.to):
            _check_folder(folder)
        return self


RecipeStep = Annotated[FilesStep | NpzStep | ManifestStep | SplitStep, Field(discriminator="kind")]


class DataRecipe(Strict):
    """Where the entry's public data lives and how `mmv-zoo data pull` arranges it."""

    description: str
    """The dataset in one or two sentences (what, how many images)."""
    citation: str | None = None
    """Who to cite for the data (text, DOI)."""
    license: str | None = None
    downloads: dict[str, Download] = Field(min_length=1)
    steps: list[RecipeStep] = Field(min_length=1)
    train: str = "."
    """Folder (relative to --out) to give `mmv-zoo train --data`; `holdout` folders stay out."""

    @model_validator(mode="after")
    def _known_sources(self) -> DataRecipe:
        for i, step in enumerate(self.steps):
            name = getattr(step, "source", None)
            if name is not None and name not in self.downloads:
                raise ValueError(f"steps[{i}].source {name!r} is not a download; valid: {sorted(self.downloads)}")
        return self


class PaperResult(Strict):
    """What the MMV_Im2Im paper reports for this experiment."""

    metric: str
    """e.g. pearson, f1, ap50, ssim, psnr."""
    value: float | None = None
    """The reported value; null where the paper gives none for this exact setting."""
    note: str | None = None
    """Where it is reported (table, figure) and on what data."""
