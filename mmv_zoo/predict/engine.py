"""Prediction of 2D and 3D images (time-lapses frame by frame) with runs, packages and zoo entries,
tiled by `tiler` and written as OME-TIFF."""

from __future__ import annotations

import glob
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from ..io.read import image_stem, is_image
from ..io.write import check_writable
from ..transforms.normalize import normalizer
from .files import Prediction, Selection, predict_file
from .halo import entry_halo
from .memory import probe_size, voxel_budget
from .tiler import plan_tiles, predict_tiled


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


def pick_device() -> str:
    """A GPU when there is one (CUDA or Apple MPS), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


@dataclass
class Options:
    """How to predict: tiling, test-time augmentation and postprocessing."""

    probabilities: bool = False
    """Segmentation: write class probabilities instead of labels."""
    threshold: float | None = None
    """Segmentation: foreground where its probability >= threshold (2 classes; more: argmax, background
    where the top probability is below it). Regression: a 0/1 mask of output >= threshold."""
    overlap: float = 0.0
    """Extra blended overlap between tile cores (fraction of a core)."""
    blend: str = "cosine"
    tta: bool = False
    """Average the predictions of the image flipped along each space axis (2^dims passes)."""
    budget: int | None = None
    """Input voxels per tile (default: what the device's memory holds for this network, see
    predict.memory; MMV_ZOO_TILE_MEMORY sets the memory, e.g. 4GiB)."""
    batch_size: int = 1
    direction: str | None = None
    """CycleGAN runs: a2b (the entry's inputs to its outputs; the default) or b2a."""
    border: str | None = None
    """What tiles see past the image border (tiler.BORDERS). `image`: nothing, so the result is one pass
    of the network over the image, as in training and validation, and no voxel is spent on padding
    (the default for runs). `mirror`: the image mirrored by the halo the package declares, as
    bioimageio.core predicts, tiled or not (the default for BioImage.IO packages and zoo entries'
    pretrained packages; `mmv-zoo predict RUN --border mirror` equals bioimageio.core on its export)."""


def flip_average(forward: Callable[..., np.ndarray], dims: int) -> Callable[..., np.ndarray]:
    """Test-time augmentation: `forward` averaged over every combination of flips of the space axes.
    Tiles are multiples of the network's step, so a flipped tile stays on its downsampling grid.
    A `keep` part ([lo, hi) per axis, see tiler.predict_tiled's `crop`) is flipped with the tile."""
    from itertools import combinations

    flips = [c for r in range(dims + 1) for c in combinations(range(2, 2 + dims), r)]

    def averaged(batch: np.ndarray, *keep: tuple[tuple[int, int], ...]) -> np.ndarray:
        total = None
        for axes in flips:
            x = np.flip(batch, axes) if axes else batch
            part = [tuple((batch.shape[2 + a] - hi, batch.shape[2 + a] - lo) if 2 + a in axes else (lo, hi)
                          for a, (lo, hi) in enumerate(keep[0]))] if keep else []
            y = forward(np.ascontiguousarray(x), *part)
            y = np.flip(y, axes) if axes else y
            total = y.astype(np.float32) if total is None else total + y
        return total / len(flips)

    return averaged


def finisher(task: str, n_names: int, options: Options) -> tuple[Callable[[np.ndarray], np.ndarray] | None, bool]:
    """(per-core postprocessing, whether it yields labels) for a task's network output."""
    t = options.threshold
    if task == "segmentation" and not options.probabilities:
        def labels(y: np.ndarray) -> np.ndarray:
            dtype = np.uint8 if y.shape[0] < 256 else np.uint16
            if t is not None and y.shape[0] == 2:
                return (y[1:2] >= t).astype(dtype)
            lab = y.argmax(0)[None]
            if t is not None:
                lab[y.max(0)[None] < t] = 0
            return lab.astype(dtype)
        return labels, True
    if task == "regression" and t is not None:
        return (lambda y: (y >= t).astype(np.uint8)), True
    return (lambda y: y.astype(np.float32)), False


def predict_array(model: Any, x: Any, entry: Any, overlap: float = 0.0, batch_size: int = 1,
                  budget: int | None = None, blend: str = "cosine", options: Options | None = None,
                  finish: Callable[[np.ndarray], np.ndarray] | None = None, out: Any = None,
                  stats: np.ndarray | Callable[[], np.ndarray] | None = None,
                  on_tile: Callable[[int, int], None] | None = None) -> Any:
    """The network output for (C, [Z], Y, X) `x` (an array or a lazy tile source): (K, [Z], Y, X) float32,
    or whatever `finish` makes of each core, written into `out` if given.

    Tiles are normalized with the image's statistics (from `stats`, an array or a callable returning
    one; default `x` itself) and cropped
    by the network's measured receptive-field halo (the one the exported package declares), so the
    result does not depend on the tiling; tiles run on the model's device.
    """
    import torch

    from .crop import cropped_runner
    from .fast import cpu_inference

    opts = options or Options(overlap=overlap, batch_size=batch_size, budget=budget, blend=blend)
    sample = stats() if callable(stats) else stats  # a callable: the statistics' pixels are freed right here
    prepare = normalizer(np.asarray(x if sample is None else sample), entry.mmv.data.normalization.source)
    del sample
    net = model.inference_model().eval()
    device = next(net.parameters()).device
    halo, _ = entry_halo(entry, net)
    rules = entry.mmv.network.size_rule(entry.spatial_dims)
    shape = tuple(x.shape[1:])
    probe = (1, entry.in_channels, *probe_size(entry))
    net, fmt = cpu_inference(net, entry.spatial_dims, probe)
    budget = opts.budget or voxel_budget(net, entry, opts.batch_size * (2 if opts.tta else 1), str(device))
    plan = plan_tiles(shape, rules, halo, budget, opts.overlap, opts.border or "image")

    cropped = cropped_runner(net, probe)

    def forward(batch: np.ndarray, keep: tuple[tuple[int, int], ...]) -> np.ndarray:
        with torch.inference_mode():
            tiles = torch.from_numpy(batch).to(device).contiguous(memory_format=fmt)
            return cropped(tiles, keep).float().contiguous().cpu().numpy()

    run = flip_average(forward, entry.spatial_dims) if opts.tta else forward
    return predict_tiled(run, x, plan, out=out, batch_size=opts.batch_size, blend=opts.blend, prepare=prepare,
                         finish=finish, on_tile=on_tile, crop=True)


def postprocess(y: np.ndarray, entry: Any, probabilities: bool = False,
                options: Options | None = None) -> tuple[np.ndarray, list[str]]:
    """Segmentation: labels (argmax, or thresholded) or the class probabilities; regression: values
    as predicted (or a mask with a threshold); instances: the embeddings clustered into labels."""
    opts = options or Options(probabilities=probabilities)
    if entry.mmv.task == "instance" and not opts.probabilities:  # the embeddings clustered as for a run
        from ..frameworks.embedseg.cluster import entry_labels

        return entry_labels(y, entry, opts.threshold), ["labels"]
    fn, is_labels = finisher(entry.mmv.task, len(entry.outputs[0].channel_names), opts)
    return fn(y), (["labels"] if is_labels else list(entry.outputs[0].channel_names))


def output_path(out: Path, image: Path) -> Path:
    return out / f"{image_stem(image)}.ome.tiff"


class RunPredictor:
    """Predicts with a trained run: tiles cropped by the receptive-field halo, then the task's postprocessing."""

    def __init__(self, source: str | Path, probabilities: bool = False, overlap: float = 0.0,
                 model: Any = None, options: Options | None = None) -> None:
        from ..run import load_model

        direction = options.direction if options is not None else None
        self.model = (load_model(source, direction=direction) if model is None else model).to(pick_device())
        self.entry = self.model.entry
        self.spatial_dims = self.entry.spatial_dims
        self.in_channels = self.entry.in_channels
        self.options = options or Options(probabilities=probabilities, overlap=overlap)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self.predict(x)

    def _finish(self) -> tuple[Callable[[np.ndarray], np.ndarray], list[str]]:
        """The per-core postprocessing and output channel names. A framework may post-process itself:
        a `postprocess(options)` method on the model returning both replaces the task's default."""
        hook = getattr(self.model, "postprocess", None)
        if callable(hook):
            return hook(self.options)
        finish, is_labels = finisher(self.entry.mmv.task, len(self.entry.outputs[0].channel_names), self.options)
        return finish, (["labels"] if is_labels else list(self.entry.outputs[0].channel_names))

    def output_names(self) -> list[str]:
        return self._finish()[1]

    @property
    def out_channels(self) -> int:
        return len(self.output_names())

    def predict(self, x: Any, out: Any = None, stats: Any = None,
                on_tile: Callable[[int, int], None] | None = None) -> tuple[Any, list[str]]:
        """(C, [Z], Y, X) array or lazy source -> (postprocessed output, its channel names); the output
        goes into `out` (an array, or a callable making one) tile by tile.

        A framework whose postprocessing needs the whole image at once (instance clustering: objects
        crossing tile borders stay whole) defines `finalize(options)` on the model, returning a
        callable from the whole blended output (what `_finish` keeps of each tile) to the result, or
        None; that output is then held in memory and the result written into `out` at the end."""
        finish, names = self._finish()
        hook = getattr(self.model, "finalize", None)
        finalize = hook(self.options) if callable(hook) else None
        if finalize is None:
            y = predict_array(self.model, x, self.entry, options=self.options, finish=finish, out=out, stats=stats,
                              on_tile=on_tile)
            return y, names
        y = finalize(predict_array(self.model, x, self.entry, options=self.options, finish=finish, stats=stats,
                                   on_tile=on_tile))
        if out is None:
            return y, names
        target = out(y.shape[0], y.dtype) if callable(out) else out
        target[...] = y
        return target, names

    def pixel_sizes(self, from_file: dict[str, float | None]) -> dict[str, float | None]:
        return _pixel_sizes(from_file, self.entry)


class EntryPredictor:
    """A zoo entry with pretrained weights: its package, with the entry's task postprocessing."""

    def __init__(self, entry: Any, probabilities: bool = False, trust_code: bool = False,
                 weight_format: str | None = None, options: Options | None = None) -> None:
        from ..remote.pretrained import entry_package
        from .package_predictor import PackagePredictor

        self.entry = entry
        self.package = entry_package(entry)
        self.inner = PackagePredictor(self.package.path, trust_code=trust_code, weight_format=weight_format,
                                      border=options.border if options else None, raw=True)
        self.spatial_dims, self.in_channels = self.inner.spatial_dims, self.inner.in_channels
        self.options = options or Options(probabilities=probabilities)
        self.out_channels = len(entry.outputs[0].channel_names)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        y, _ = self.inner(x)
        return postprocess(y, self.entry, options=self.options)

    def pixel_sizes(self, from_file: dict[str, float | None]) -> dict[str, float | None]:
        return _pixel_sizes(from_file, self.entry)


def open_predictor(source: str | Path, probabilities: bool = False, overlap: float = 0.0,
                   trust_code: bool = False, weight_format: str | None = None, options: Options | None = None) -> Any:
    """A run folder or checkpoint -> RunPredictor; a BioImage.IO package -> PackagePredictor; a zoo
    entry (name, folder or rdf.yaml) with pretrained weights -> EntryPredictor."""
    from ..entry import EntryError, load_entry
    from ..run import looks_like_run
    from .package_predictor import PackagePredictor, is_package

    options = options or Options(probabilities=probabilities, overlap=overlap)
    path = Path(source)
    is_run = not is_package(path) and (looks_like_run(path) or (path.is_dir() and not (path / "rdf.yaml").exists()))
    if options.direction is not None and not is_run:
        from ..errors import RunError

        raise RunError(f"{source}: --direction {options.direction} is for CycleGAN runs; a package or zoo entry "
                       "predicts in the one direction it was exported for")
    if is_package(path):
        return PackagePredictor(source, trust_code=trust_code, weight_format=weight_format, border=options.border,
                                raw=options.probabilities, seed_threshold=options.threshold)
    if is_run:
        return RunPredictor(source, options=options)  # says what a run folder lacks
    try:
        entry = load_entry(source)
    except EntryError:
        if path.exists():
            raise
        from ..errors import RunError

        raise RunError(f"{source}: not a run folder, checkpoint, BioImage.IO package or zoo entry") from None
    pre = entry.mmv.pretrained
    if pre is not None and pre.format == "mmv_im2im_checkpoint":  # the entry's network, weights from MMV_Im2Im
        from ..remote.im2im_checkpoint import checkpoint_model
        from ..remote.pretrained import entry_package

        ckpt = entry_package(entry).path
        return RunPredictor(ckpt, model=checkpoint_model(entry, ckpt), options=options)
    return EntryPredictor(entry, trust_code=trust_code, weight_format=weight_format, options=options)


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
) -> list[Prediction]:
    """Predict every input image (every selected scene and time point) with a run, a BioImage.IO
    package or a zoo entry with weights: one output per input scene in `out`, OME-TIFF or OME-Zarr.
    `devices` / `num_nodes` > 1 split the files across processes through Lightning (same outputs).
    """
    paths = list(dict.fromkeys(expand_inputs(inputs)))
    _refuse_name_clashes(paths, out)
    check_writable(out)
    options = options or Options(probabilities=probabilities, overlap=overlap)
    selection = selection or Selection(channels=channels)
    if devices > 1 or num_nodes > 1:
        from .distributed import predict_distributed

        results = predict_distributed(source, paths, out, options, selection, overwrite, trust_code, weight_format,
                                      devices, num_nodes)
        for result in results:
            if on_file is not None:
                on_file(result)
        return results
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


def _pixel_sizes(from_file: dict[str, float | None], entry: Any) -> dict[str, float | None]:
    """The input file's physical pixel sizes; where it has none, the entry's axis scales if set."""
    sizes = dict(from_file)
    for axis in entry.inputs[0].space_axes:
        if sizes.get(axis.id) is None and axis.unit is not None:
            sizes[axis.id] = axis.scale
    if entry.spatial_dims == 2:
        sizes["z"] = None
    return sizes
