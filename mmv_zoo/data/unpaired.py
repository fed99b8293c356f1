"""Unpaired data (CycleGAN): two unrelated folders, one image domain each, sampled independently.

Domain A (`layout.source`) holds images of the entry's inputs, domain B (`layout.target`) of its
outputs; names, counts and sizes need not match. A training sample is a random patch of a random
image of A next to a random patch of a random image of B, each flipped and rotated on its own.
The split is per folder: a seeded random share of each, or `train/` and `val/` folders.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError
from ..io.read import image_stem, is_image, read_image
from ..transforms.normalize import normalize
from ..transforms.stain import StainError
from .dataset import augment, pad_to
from .loaders import PatchDataModule


@dataclass
class DomainImage:
    name: str
    data: np.ndarray  # float32 (C, [Z], Y, X), normalized


def domain_files(folder: Path, field: str) -> list[Path]:
    """The images of one domain folder; DataError naming the folder (and the layout field) when there are none."""
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder (config.mmv_zoo.data.layout.{field})")
    files = sorted(p for p in folder.iterdir() if is_image(p))
    if not files:
        raise DataError(f"{folder}: no images (config.mmv_zoo.data.layout.{field}; looked for .tif, .png, .zarr ...)")
    return files


def split_domains(root: Path, data: Any) -> tuple[list[Path], list[Path], list[Path], list[Path]]:
    """(train A, val A, train B, val B) for the entry's data settings."""
    if root.is_file():
        raise DataError(f"{root}: is a file; --data takes the folder that holds the training images")
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    layout = data.layout
    if data.split.kind == "presplit":
        return (domain_files(root / "train" / layout.source, "source"),
                domain_files(root / "val" / layout.source, "source"),
                domain_files(root / "train" / layout.target, "target"),
                domain_files(root / "val" / layout.target, "target"))
    out: list[list[Path]] = []
    for field in ("source", "target"):
        folder = root / getattr(layout, field)
        files = domain_files(folder, field)
        if len(files) < 2:
            raise DataError(f"{folder}: {len(files)} image; a random split needs at least 2 in each folder "
                            "(one for validation)")
        order = list(range(len(files)))
        random.Random(data.split.seed).shuffle(order)
        n_val = min(len(files) - 1, max(1, round(len(files) * data.split.val_fraction)))
        out += [sorted(files[i] for i in order[n_val:]), sorted(files[i] for i in order[:n_val])]
    return out[0], out[1], out[2], out[3]


def load_domain(files: list[Path], entry: Any, side: str) -> list[DomainImage]:
    """Read and normalize the images of one domain (`side`: source = inputs[0], target = outputs[0]);
    one DataError listing every file that cannot be read or has the wrong channel count."""
    dims = entry.spatial_dims
    tensor = entry.inputs[0] if side == "source" else entry.outputs[0]
    channels = len(tensor.channel_names)
    norm = getattr(entry.mmv.data.normalization, side)
    loaded, problems = [], []
    for path in files:
        try:
            img = read_image(path, dims)
        except DataError as e:
            problems.append(str(e))
            continue
        if img.data.shape[0] != channels:
            field = "inputs[0]" if side == "source" else "outputs[0]"
            problems.append(f"{path}: has {img.data.shape[0]} channel(s) but the entry's {field} "
                            f"({tensor.id}: {tensor.channel_names}) takes {channels}")
            continue
        try:
            loaded.append(DomainImage(image_stem(path), normalize(img.data, norm)))
        except StainError as e:  # macenko: no stains to estimate
            problems.append(f"{path}: {e}")
    if problems:
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError(f"{len(problems)} bad file(s) in {files[0].parent}: " + "; ".join(problems[:5]) + more)
    return loaded


class UnpairedPatchDataset(Dataset):
    """Item i: (patch of a random A image, patch of a random B image), drawn independently from a
    generator seeded by (seed, epoch, i); `per_image` items per image of the larger domain."""

    def __init__(self, a: list[DomainImage], b: list[DomainImage], patch: list[int], per_image: int,
                 augment_settings: Any, seed: int = 0) -> None:
        self.a = [pad_to(d.data, patch) for d in a]
        self.b = [pad_to(d.data, patch) for d in b]
        self.patch = list(patch)
        self.per_image = per_image
        self.augment = augment_settings
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return max(len(self.a), len(self.b)) * self.per_image

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _patch(self, image: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        starts = [int(rng.integers(0, n - p + 1)) for n, p in zip(image.shape[1:], self.patch, strict=True)]
        x = image[(slice(None), *(slice(s, s + p) for s, p in zip(starts, self.patch, strict=True)))]
        x, _ = augment(x, x, rng, self.augment)
        return torch.from_numpy(np.ascontiguousarray(x))

    def draw(self, index: int) -> tuple[int, int]:
        """The indices of the A and B images item `index` takes."""
        rng = np.random.default_rng((self.seed, self.epoch, index, 0))
        return int(rng.integers(len(self.a))), int(rng.integers(len(self.b)))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        ia, ib = self.draw(index)
        rng_a = np.random.default_rng((self.seed, self.epoch, index, 1))
        rng_b = np.random.default_rng((self.seed, self.epoch, index, 2))
        return self._patch(self.a[ia], rng_a), self._patch(self.b[ib], rng_b)


class UnpairedDataModule(PatchDataModule):
    """Both domains read and checked once; training patches drawn anew each epoch, validation fixed."""

    def __init__(self, entry: Any, root: Path) -> None:
        super().__init__()
        self.entry = entry
        self.root = Path(root)
        self.train_a: list[Path] = []
        self.val_a: list[Path] = []
        self.train_b: list[Path] = []
        self.val_b: list[Path] = []
        self.train_set: UnpairedPatchDataset | None = None
        self.val_set: UnpairedPatchDataset | None = None

    @property
    def train_files(self) -> list[str]:
        """Names of the training images, domain A then B (run.json)."""
        return [image_stem(p) for p in self.train_a + self.train_b]

    @property
    def val_files(self) -> list[str]:
        return [image_stem(p) for p in self.val_a + self.val_b]

    def prepare(self) -> None:
        """Find, read and check every file of both domains before training starts."""
        if self.train_set is not None:
            return
        data, training = self.entry.mmv.data, self.entry.mmv.training
        self.train_a, self.val_a, self.train_b, self.val_b = split_domains(self.root, data)
        a = load_domain(self.train_a + self.val_a, self.entry, "source")
        b = load_domain(self.train_b + self.val_b, self.entry, "target")
        na, nb = len(self.train_a), len(self.train_b)
        self.train_set = UnpairedPatchDataset(a[:na], b[:nb], data.patch, training.patches_per_image, data.augment,
                                              training.seed)
        self.val_set = UnpairedPatchDataset(a[na:], b[nb:], data.patch, training.val_patches, None,
                                            training.seed + 1)
