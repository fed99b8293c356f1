"""Predict many images with one source: `predict_files`, the library behind `mmv-zoo predict`.

Inputs are files, folders and glob patterns; every selected scene and time point of each is
predicted into its own output (OME-TIFF or OME-Zarr, see `files`), in this process or split across
several (`distributed`). Two inputs that would write the same output, or an output that would
replace an input, are refused before anything is written.
"""

from __future__ import annotations

import glob
from collections.abc import Callable
from pathlib import Path

from ..errors import DataError
from ..io.read import image_stem, is_image
from ..io.write import check_writable
from ..settings.predict import Options, Selection
from .files import Prediction, predict_file
from .sources import open_predictor


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files, folders (their images) and glob patterns -> image paths; errors name what matched nothing."""
    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir() and not str(p).lower().endswith(".zarr"):
            found = sorted(q for q in p.iterdir() if is_image(q))
            if not found:
                raise DataError(f"{p}: folder has no images")
            paths += found
        elif p.exists():
            paths.append(p)
        elif any(c in str(item) for c in "*?["):
            found = sorted(Path(q) for q in glob.glob(str(item)) if is_image(Path(q)))
            if not found:
                raise DataError(f"{item}: pattern matches no images")
            paths += found
        else:
            raise DataError(f"{p}: no such file or folder")
    return paths


def output_path(out: Path, image: Path) -> Path:
    return out / f"{image_stem(image)}.ome.tiff"


def predict_files(
    source: str | Path,
    inputs: list[str | Path],
    out: Path,
    overwrite: bool = False,
    probabilities: bool = False,
    overlap: float = 0.0,
    channels: list[int | str] | None = None,
    on_file: Callable[[Prediction], None] | None = None,
    trust_code: bool = False,
    weight_format: str | None = None,
    options: Options | None = None,
    selection: Selection | None = None,
    on_tile: Callable[[int, int], None] | None = None,
    devices: int = 1,
    num_nodes: int = 1,
    uncertainty: str | None = None,
    samples: int | None = None,
    members: list[str] | None = None,
) -> list[Prediction]:
    """Predict every input image (every selected scene and time point) with a run, a BioImage.IO
    package or a zoo entry with weights: one output per input scene in `out`, OME-TIFF or OME-Zarr.
    `devices` / `num_nodes` > 1 split the files across processes through Lightning (same outputs).
    `uncertainty` (tta, dropout or ensemble with `members`, see predict.uncertainty) also writes a
    per-pixel uncertainty map `<stem>_uncertainty` beside each output.
    """
    paths = list(dict.fromkeys(expand_inputs(inputs)))
    _refuse_name_clashes(paths, out)
    check_writable(out)
    options = options or Options(probabilities=probabilities, overlap=overlap)
    selection = selection or Selection(channels=channels)
    if members and uncertainty != "ensemble":
        raise DataError("--member: only with --uncertainty ensemble")
    if uncertainty is not None and (devices > 1 or num_nodes > 1):
        raise DataError("--uncertainty: on one device (drop --devices / --num-nodes)")
    if devices > 1 or num_nodes > 1:
        from .distributed import predict_distributed  # imports Lightning: only when asked for

        results = predict_distributed(source, paths, out, options, selection, overwrite, trust_code, weight_format,
                                      devices, num_nodes)
        for result in results:
            if on_file is not None:
                on_file(result)
        return results
    if uncertainty is not None:
        from .uncertainty import open_uncertain

        predictor = open_uncertain([source, *(members or [])], uncertainty, options, samples, trust_code,
                                   weight_format)
    else:
        predictor = open_predictor(source, trust_code=trust_code, weight_format=weight_format, options=options)
    results = []
    for path in paths:
        for result in predict_file(predictor, path, out, selection, overwrite, on_tile):
            results.append(result)
            if on_file is not None:
                on_file(result)
    return results


def _refuse_name_clashes(paths: list[Path], out: Path) -> None:
    """Two inputs that would write the same output file (a/x.tif, b/x.tif) are an error, not a skip."""
    seen: dict[Path, Path] = {}
    clashes = []
    inputs = {p.resolve() for p in paths}
    for p in paths:
        target = output_path(out, p)
        if target.resolve() in inputs or target.with_name(f"{image_stem(p)}.ome.zarr").resolve() in inputs:
            raise DataError(f"{p}: the output would replace this input; choose another --out folder")
        if target in seen and seen[target].resolve() != p.resolve():
            clashes.append(f"{seen[target]} and {p} -> {target.name}")
        seen.setdefault(target, p)
    if clashes:
        raise DataError(f"inputs with the same name would write the same output: {'; '.join(clashes[:5])}")
