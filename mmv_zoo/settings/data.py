"""Data settings: layout of the training files, split, normalization, patches and augmentation."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from .strict import Strict


class PairedFolders(Strict):
    """Source and target images in two folders, matched by file name."""

    layout: Literal["paired_folders"]
    source: str = "source"
    """Folder (relative to --data) with the input images."""
    target: str = "target"
    """Folder (relative to --data) with the target images or label masks."""
    source_suffix: str = ""
    """Part of the source file name before the extension that is not shared with the target."""
    target_suffix: str = ""
    """Part of the target file name before the extension, e.g. `_labels` for `a.tif` / `a_labels.tif`."""
    exclusion: str | None = None
    """Folder (relative to --data) with exclusion (cost) masks named like the sources: non-zero pixels
    are taken out of the loss (partially annotated data). A source without a mask keeps every pixel."""

    @property
    def has_exclusion(self) -> bool:
        """Whether the layout gives exclusion (cost) masks."""
        return self.exclusion is not None


class CsvLayout(Strict):
    """A CSV file listing source and target paths (relative to the CSV), one pair per row."""

    layout: Literal["csv"]
    file: str = "data.csv"
    source_column: str = "source"
    target_column: str = "target"
    split_column: str | None = None
    """Optional column whose values `train` / `val` pre-split the rows."""
    exclusion_column: str | None = None
    """Optional column with an exclusion (cost) mask per row (empty: none): non-zero pixels are taken
    out of the loss."""

    @property
    def has_exclusion(self) -> bool:
        """Whether the layout gives exclusion (cost) masks."""
        return self.exclusion_column is not None


class UnpairedFolders(Strict):
    """Two unrelated folders, one image domain each (CycleGAN): file names, counts and sizes need not
    match, and a training sample takes a random patch of a random image from each, independently."""

    layout: Literal["unpaired_folders"]
    source: str = "source"
    """Folder (relative to --data) with images of the input domain (A, `inputs[0]`)."""
    target: str = "target"
    """Folder (relative to --data) with images of the output domain (B, `outputs[0]`)."""

    @property
    def has_exclusion(self) -> bool:
        """Unrelated images have no exclusion masks."""
        return False


class SourceFolder(Strict):
    """One folder of noisy images and no targets (self-supervised denoising, framework n2v): each image
    is its own target. With a random split, whole files are held back for validation; a single
    image is split by region instead (the last `split.val_fraction` of its longest axis, at least one
    patch, is held back). `mmv-zoo evaluate` scores against clean references named like the
    sources in the folder `reference`, when there are any."""

    layout: Literal["source_folder"]
    source: str = "source"
    """Folder (relative to --data) with the noisy images."""
    planes: bool = False
    """2D entries: every z plane and time point of a stack or time-lapse is a training image of its own."""
    reference: str = "clean"
    """Folder (relative to --data) of clean references, only for `mmv-zoo evaluate` (training needs none)."""

    @property
    def has_exclusion(self) -> bool:
        """Self-supervised images have no exclusion masks."""
        return False


DataLayout = Annotated[PairedFolders | CsvLayout | UnpairedFolders | SourceFolder, Field(discriminator="layout")]


class RandomSplit(Strict):
    """Hold back a seeded random share of the pairs for validation."""

    kind: Literal["random"]
    val_fraction: float = Field(default=0.2, gt=0, lt=1)
    seed: int = 0


class PreSplit(Strict):
    """The data folder holds `train/` and `val/`, each in the layout (or the CSV has a split column)."""

    kind: Literal["presplit"]


SplitSettings = Annotated[RandomSplit | PreSplit, Field(discriminator="kind")]


class PercentileNorm(Strict):
    """Map the `lower`/`upper` percentiles of each image (per channel) to `range`."""

    kind: Literal["percentile"]
    lower: float = Field(default=1.0, ge=0, lt=100)
    upper: float = Field(default=99.8, gt=0, le=100)
    range: Literal["0,1", "-1,1"] = "0,1"
    """Target interval: `0,1` or `-1,1`."""
    clip: bool = False

    @model_validator(mode="after")
    def _order(self) -> PercentileNorm:
        if self.lower >= self.upper:
            raise ValueError(f"lower ({self.lower}) must be below upper ({self.upper})")
        return self


class StandardNorm(Strict):
    """Zero mean, unit variance per image and channel."""

    kind: Literal["standard"]


class CenterNorm(Strict):
    """Zero mean, unit variance with statistics from the middle Z chunk (as in the labelfree paper)."""

    kind: Literal["center"]
    z_chunk: int = Field(default=32, ge=1)
    """Number of central Z slices the statistics come from (all slices when the stack is smaller)."""


class ForegroundNorm(Strict):
    """Label masks as images: every value above 0 becomes 1 (instance labels included), the rest 0.

    For masks given to a GAN as input (synthesis from masks) or as the target domain (unsupervised
    segmentation); exported as BioImage.IO `binarize` (threshold 0)."""

    kind: Literal["foreground"]
    range: Literal["0,1", "-1,1"] = "0,1"
    """Values of background and foreground: `0,1` or `-1,1`."""


class NoNorm(Strict):
    """Values as read (converted to float32)."""

    kind: Literal["none"]


class StainReference(Strict):
    """The stains every image is mapped to: unit optical-density vectors and concentration maxima."""

    stains: list[Annotated[list[float], Field(min_length=3, max_length=3)]] = Field(
        default=[[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]], min_length=2, max_length=2)
    """Two stain vectors, 3 RGB optical densities each (hematoxylin first; scaled to unit length when
    used); default Macenko's H&E."""
    max_concentrations: list[Annotated[float, Field(gt=0)]] = Field(
        default=[1.9705, 1.0308], min_length=2, max_length=2)
    """99th percentile of each stain's concentration in the reference image."""

    @model_validator(mode="after")
    def _nonzero(self) -> StainReference:
        norms = [sum(v * v for v in row) ** 0.5 for row in self.stains]
        for i, n in enumerate(norms):
            if n < 1e-6:
                raise ValueError(f"stains[{i}] is a zero vector")
        cos = sum(a * b for a, b in zip(*self.stains, strict=True)) / (norms[0] * norms[1])
        if abs(cos) > 0.9998:  # less than about 1 degree apart: one stain, the rebuild would be degenerate
            raise ValueError("stains: the two stain vectors are (nearly) parallel; they must be two different stains")
        return self


class MacenkoNorm(Strict):
    """Macenko stain normalization of RGB brightfield histology (H&E, hematoxylin-DAB IHC): each
    image's two stains are estimated and the image is rebuilt with the `reference` stains, then
    mapped to `range`. `mmv-zoo stain-reference IMAGE` prints a reference taken from your own image.
    No BioImage.IO preprocessing exists for it, so `mmv-zoo export` refuses such entries."""

    kind: Literal["macenko"]
    reference: StainReference = StainReference()
    alpha: float = Field(default=1.0, gt=0, lt=50)
    """Percentile of the stain angle taken as each extreme stain (alpha and 100 - alpha)."""
    beta: float = Field(default=0.15, ge=0)
    """Pixels with an optical density below this in any channel are transparent (background)."""
    intensity: float = Field(default=240.0, gt=0)
    """Background brightness Io of the images (240 for 8-bit images; above 255 the images are taken as
    16-bit and the rebuilt image is scaled by 65535 instead of 255)."""
    range: Literal["0,1", "-1,1"] = "0,1"
    """Interval the rebuilt RGB image (0..255, 16-bit: 0..65535) is mapped to: `0,1` or `-1,1`."""


Normalization = Annotated[
    PercentileNorm | StandardNorm | CenterNorm | ForegroundNorm | NoNorm | MacenkoNorm, Field(discriminator="kind")
]


class NormalizationSettings(Strict):
    source: Normalization = PercentileNorm(kind="percentile")
    target: Normalization = NoNorm(kind="none")
    """Regression targets are normalized too (segmentation targets never are); for CycleGAN, the
    output domain's images."""


class AugmentSettings(Strict):
    flip: bool = True
    """Random flips along every spatial axis."""
    rotate90: bool = True
    """Random multiples of 90 degrees in the y-x plane."""


class PartialLoading(Strict):
    """Hold only some training images at a time: a random subset, drawn anew every few epochs."""

    files_per_epoch: int = Field(ge=1)
    """Training images (pairs) an epoch draws its patches from."""
    refresh_every: int = Field(default=1, ge=1)
    """Draw a new subset every this many epochs (images of the old one are released)."""


class CacheSettings(Strict):
    """A persistent cache of the deterministic part of loading (read + normalize), as memory-mappable
    `.npy` files: later runs (and epochs) read only the patches they need, not the files."""

    enabled: bool = False
    folder: str | None = None
    """Where the cache lives (default: `$MMV_ZOO_CACHE/datasets`). An entry is keyed by the file's
    path, size and modification time and by the normalization and channel settings, so changing
    any of them recomputes it."""


class PatchSampling(Strict):
    """Where training patches come from."""

    foreground_fraction: float = Field(default=0.0, ge=0, le=1)
    """Share of patches centred on a random foreground pixel (segmentation: a label > 0; regression:
    a target above its 90th percentile); the rest are uniform. 0: all uniform."""


class DataSettings(Strict):
    layout: DataLayout = PairedFolders(layout="paired_folders")
    split: SplitSettings = RandomSplit(kind="random")
    patch: list[int]
    """Training patch size per spatial axis ([y, x] or [z, y, x])."""
    normalization: NormalizationSettings = NormalizationSettings()
    augment: AugmentSettings = AugmentSettings()
    cache: CacheSettings = CacheSettings()
    partial: PartialLoading | None = None
    """Partial loading for datasets that do not fit in memory (off when unset)."""
    sampling: PatchSampling = PatchSampling()
    on_bad_file: Literal["fail", "skip"] = "fail"
    """A training file that cannot be read or does not fit the entry: `fail` (before training, listing
    every bad file) or `skip` it (listed in run.json and on the console)."""
    labels: Literal["classes", "foreground"] = "classes"
    """Segmentation targets: `classes` keeps values as class ids; `foreground` maps any non-zero to 1
    (use it for instance label images)."""
