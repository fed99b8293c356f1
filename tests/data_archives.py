"""Small stand-ins for the public datasets zoo recipes download: same archive structure (member paths,
file formats, array names, manifest columns) as the real ones, tiny contents. Keyed by the file name
the recipe downloads; `tests/test_recipes.py` serves them from 127.0.0.1.

Each builder takes the served base URL (manifests list per-row image URLs) and returns
{file name: bytes} for every file that download needs (a manifest also returns its images).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tests.archive_bytes import npz, tar_gz, tif


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng(sum(name.encode()))


def care_denoising(name: str) -> Callable[[str], dict[str, bytes]]:
    """CARE's denoising archives (Weigert et al. 2018, publications.mpi-cbg.de/publications-sites/7207):
    `Denoising_<Name>/train_data/data_label.npz` with X (noisy) and Y (clean) patches of shape
    (n, 1, Z, Y, X) float32, and `test_data/condition_<k>/*.tif` with `test_data/GT/*.tif` stacks."""

    def build(base: str) -> dict[str, bytes]:
        rng = _rng(name)
        clean = rng.random((6, 1, 8, 32, 32)).astype(np.float32)
        noisy = (clean + rng.normal(0, 0.3, clean.shape)).astype(np.float32)
        members = {f"Denoising_{name}/train_data/data_label.npz": npz(X=noisy, Y=clean, axes=np.array("SCZYX"))}
        for i in range(2):
            stack = (rng.random((8, 40, 40)) * 1000).astype(np.uint16)
            members[f"Denoising_{name}/test_data/GT/stack_{i}.tif"] = tif(stack)
            for k in (1, 2, 3):
                members[f"Denoising_{name}/test_data/condition_{k}/stack_{i}.tif"] = tif(stack // k)
        return {f"Denoising_{name}.tar.gz": tar_gz(members)}

    return build


def _all_builders() -> dict[str, Callable[[str], dict[str, bytes]]]:
    from tests import archives_allen, archives_public

    return {"Denoising_Planaria.tar.gz": care_denoising("Planaria"),
            "Denoising_Tribolium.tar.gz": care_denoising("Tribolium"),
            **archives_allen.BUILDERS, **archives_public.BUILDERS}


BUILDERS = _all_builders()
"""Download file name (the last part of its URL, or `file` of a DOI download) -> builder."""
