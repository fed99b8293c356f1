"""Macenko stain normalization of brightfield RGB histology (numpy).

Macenko M et al., "A method for normalizing histology slides for quantitative analysis", ISBI 2009
(doi:10.1109/ISBI.2009.5193250). An image's two stain vectors are estimated in optical-density (OD)
space: pixels whose OD is below `beta` in any channel are transparent and dropped, the remaining OD
values are projected onto the plane of the two largest eigenvectors of their covariance, and the
directions at the `alpha` and `100 - alpha` percentiles of the angle in that plane are the stains.
Each pixel's stain concentrations (least squares) are scaled so that their 99th percentiles equal the
reference maximum concentrations, and the image is rebuilt with the reference stain vectors.

Images are (3, [Z], Y, X) RGB with intensities on the scale of `intensity` (the background
brightness `Io`, 240 for 8-bit images). The stain with the larger red OD comes first (hematoxylin in
H&E and in hematoxylin-DAB IHC).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

# The H&E reference of Macenko's paper as distributed with its widely used implementations.
REFERENCE_STAINS = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
REFERENCE_MAX_CONCENTRATIONS = (1.9705, 1.0308)
MIN_STAINED_PIXELS = 16
"""Fewer non-transparent pixels than this: no stain estimate (the covariance would be meaningless)."""


def white_level(intensity: float) -> float:
    """Full scale of images whose background is `intensity`: 255 (8-bit) up to Io 255, else 65535."""
    return 255.0 if intensity <= 255 else 65535.0


class StainError(DataError):
    """An image has no stains to estimate; callers that know the file put its path in front."""


@dataclass(frozen=True)
class StainEstimate:
    """An image's stain matrix (2 unit OD vectors as rows) and the 99th percentile of each concentration."""

    stains: np.ndarray
    max_concentrations: np.ndarray


def optical_density(rgb: np.ndarray, intensity: float = 240.0) -> np.ndarray:
    """OD = log(Io / I) per pixel and channel, (3, ...) -> (3, ...) float64 (I taken as at least one
    8-bit level: 1, or 257 on the 16-bit scale)."""
    i = np.maximum(np.asarray(rgb, dtype=np.float64), white_level(intensity) / 255.0)
    return np.log(intensity / i)


def _check_rgb(rgb: np.ndarray, what: str | None) -> None:
    if rgb.ndim < 3 or rgb.shape[0] != 3:
        where = f"{what}: " if what else ""
        raise StainError(f"{where}Macenko stain normalization needs an RGB image (3, [Z], Y, X), got shape "
                         f"{tuple(rgb.shape)}")


def estimate_stains(rgb: np.ndarray, alpha: float = 1.0, beta: float = 0.15, intensity: float = 240.0,
                    what: str | None = None) -> StainEstimate:
    """The Macenko stain matrix and maximum concentrations of an RGB image (3, [Z], Y, X).

    Raises StainError (naming `what` if given) when fewer than MIN_STAINED_PIXELS pixels have an OD of at least
    `beta` in every channel (a blank, white or transparent image has no stains to estimate)."""
    rgb = np.asarray(rgb)
    _check_rgb(rgb, what)
    od = optical_density(rgb, intensity).reshape(3, -1)
    tissue = od[:, np.all(od >= beta, axis=0)]
    if tissue.shape[1] < MIN_STAINED_PIXELS:
        where = f"{what}: " if what else ""
        raise StainError(f"{where}no stained tissue for Macenko stain normalization ({tissue.shape[1]} pixels "
                         f"with optical density >= beta={beta} in every channel, {MIN_STAINED_PIXELS} needed); "
                         "is it blank, or is `intensity` (the background brightness) wrong?")
    _, vecs = np.linalg.eigh(np.cov(tissue))
    plane = vecs[:, 1:3]  # columns: second largest, largest eigenvector
    plane = plane * np.where(plane.sum(axis=0) < 0, -1.0, 1.0)  # point into positive OD: angles in (0, pi)
    proj = plane.T @ tissue
    phi = np.arctan2(proj[1], proj[0])
    lo, hi = np.percentile(phi, [alpha, 100 - alpha])
    v_lo = plane @ np.array([np.cos(lo), np.sin(lo)])
    v_hi = plane @ np.array([np.cos(hi), np.sin(hi)])
    stains = np.stack([v_lo, v_hi] if v_lo[0] > v_hi[0] else [v_hi, v_lo])
    if np.degrees(hi - lo) < 1.0:
        where = f"{what}: " if what else ""
        raise StainError(f"{where}one stain only (the stain angles of its tissue span {np.degrees(hi - lo):.2f} "
                         "degrees, at least 1 needed): Macenko stain normalization needs two stains")
    conc = concentrations(od, stains)
    return StainEstimate(stains, np.percentile(conc, 99, axis=1))


def concentrations(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """Least-squares stain concentrations (2, N) of OD values (3, N) for a (2, 3) stain matrix."""
    return np.linalg.lstsq(stains.T, od, rcond=None)[0]


class MacenkoNormalizer:
    """Normalizes blocks of one image with that image's stain estimate, to the reference stains."""

    def __init__(self, estimate: StainEstimate, reference_stains: np.ndarray, reference_max: np.ndarray,
                 intensity: float = 240.0) -> None:
        self.estimate = estimate
        self.reference_stains = np.asarray(reference_stains, dtype=np.float64)
        self.reference_stains = self.reference_stains / np.linalg.norm(self.reference_stains, axis=1, keepdims=True)
        self.scale = np.asarray(reference_max, dtype=np.float64) / np.maximum(estimate.max_concentrations, 1e-6)
        self.intensity = intensity
        self.white = white_level(intensity)
        """Rebuilt intensities are clipped to [0, white]; the network sees them divided by it."""

    def __call__(self, block: np.ndarray) -> np.ndarray:
        """(3, ...) RGB -> (3, ...) float64 RGB on the input's scale, clipped to [0, white]."""
        block = np.asarray(block)
        _check_rgb(block, "image block")
        od = optical_density(block, self.intensity).reshape(3, -1)
        conc = concentrations(od, self.estimate.stains) * self.scale[:, None]
        rebuilt = self.intensity * np.exp(-(self.reference_stains.T @ conc))
        return np.clip(rebuilt, 0.0, self.white).reshape(block.shape)


def macenko_normalizer(rgb: np.ndarray, settings) -> MacenkoNormalizer:
    """The normalizer for image `rgb` under `settings` (a `kind: macenko` normalization)."""
    estimate = estimate_stains(rgb, settings.alpha, settings.beta, settings.intensity)
    ref = settings.reference
    return MacenkoNormalizer(estimate, np.array(ref.stains), np.array(ref.max_concentrations), settings.intensity)


def normalize_stains(rgb: np.ndarray, stains=REFERENCE_STAINS, max_concentrations=REFERENCE_MAX_CONCENTRATIONS,
                     alpha: float = 1.0, beta: float = 0.15, intensity: float = 240.0) -> np.ndarray:
    """`rgb` (3, [Z], Y, X) rebuilt with the reference stains: float64 on the input's scale (8-bit: 0..255)."""
    estimate = estimate_stains(rgb, alpha, beta, intensity)
    return MacenkoNormalizer(estimate, np.array(stains), np.array(max_concentrations), intensity)(rgb)


def read_rgb(path: str | Path) -> np.ndarray:
    """An RGB image file as (3, [Z], Y, X), read the way training reads its images."""
    from ..io.read import read_image

    path = Path(path)
    try:
        return np.asarray(read_image(path, spatial_dims=2).data)
    except DataError as e:
        if "is 3D" not in str(e):
            raise
    return np.asarray(read_image(path, spatial_dims=3).data)


def reference_from_image(path: str | Path, alpha: float = 1.0, beta: float = 0.15,
                         intensity: float = 240.0) -> dict[str, list]:
    """The `reference:` block of a macenko normalization, estimated from one of your own images."""
    estimate = estimate_stains(read_rgb(path), alpha, beta, intensity, what=str(path))
    return {"stains": [[round(float(v), 4) for v in row] for row in estimate.stains],
            "max_concentrations": [round(float(c), 4) for c in estimate.max_concentrations]}
