"""Array operations of a recipe's `files` step (`config.mmv_zoo.recipe.steps[].kind: files`): crop,
RGB to grey, every time point, names from a pattern, per-object masks merged into instance labels,
and keeping only files with a partner. Run by `mmv_zoo/recipe_ops.py`; no heavy imports here."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from .base import Strict

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
        from .recipe import _check_folder

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
