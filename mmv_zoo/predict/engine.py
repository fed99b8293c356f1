"""Prediction of 2D and 3D images with trained runs and zoo entries: the network tiled by `tiler`,
each tile cropped by the measured receptive-field halo, then the framework's post-processing.

`predict_array` runs a trained framework on one (C, [Z], Y, X) image or lazy source; `RunPredictor`
(streams tile by tile) and `EntryPredictor` (a zoo entry's pretrained package) are the predictors
that file prediction (`files`, `batch`) drives; `sources.open_predictor` picks one for a source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..frameworks.finish import task_postprocess
from ..settings.predict import Options, halo_per_axis
from ..transforms.normalize import normalizer
from .memory import probe_size, voxel_budget
from .predictor import Predictor
from .tiler import plan_tiles, predict_tiled

__all__ = ["EntryPredictor", "Options", "RunPredictor", "flip_average", "pick_device", "postprocess",
           "predict_array"]


def pick_device() -> str:
    """A GPU when there is one (CUDA or Apple MPS), else the CPU."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def flip_sets(dims: int, first: int) -> list[tuple[int, ...]]:
    """Every combination of flips of `dims` space axes numbered from `first` (the empty one first):
    2^dims sets, what test-time augmentation averages over."""
    from itertools import combinations

    axes = range(first, first + dims)
    return [c for r in range(dims + 1) for c in combinations(axes, r)]


def flip_average(forward: Callable[..., np.ndarray], dims: int) -> Callable[..., np.ndarray]:
    """Test-time augmentation: `forward` averaged over every combination of flips of the space axes.
    Tiles are multiples of the network's step, so a flipped tile stays on its downsampling grid.
    A `keep` part ([lo, hi) per axis, see tiler.predict_tiled's `crop`) is flipped with the tile."""
    flips = flip_sets(dims, first=2)

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


def predict_array(model: Any, x: Any, entry: Any, overlap: float = 0.0, batch_size: int = 1,
                  budget: int | None = None, blend: str = "cosine", options: Options | None = None,
                  finish: Callable[[np.ndarray], np.ndarray] | None = None, out: Any = None,
                  stats: np.ndarray | Callable[[], np.ndarray] | None = None,
                  on_tile: Callable[[int, int], None] | None = None, mc_dropout: bool = False) -> Any:
    """The network output for (C, [Z], Y, X) `x` (an array or a lazy tile source): (K, [Z], Y, X) float32,
    or whatever `finish` makes of each core, written into `out` if given.

    Tiles are normalized with the image's statistics (from `stats`, an array or a callable returning
    one; default `x` itself) and cropped
    by the network's measured receptive-field halo (the one the exported package declares), so the
    result does not depend on the tiling; tiles run on the model's device. `mc_dropout` keeps the
    network's dropout layers active (one random draw per call: Monte-Carlo dropout) and runs it as it
    is, without the fast CPU copy (which folds dropout away).
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
    halo = tile_halo(entry, net, opts.halo)
    rules = entry.mmv.network.size_rule(entry.spatial_dims)
    shape = tuple(x.shape[1:])
    probe = (1, entry.in_channels, *probe_size(entry))
    net, fmt = cpu_inference(net, entry.spatial_dims, probe)
    budget = opts.budget or voxel_budget(net, entry, opts.batch_size * (2 if opts.tta else 1), str(device))
    plan = plan_tiles(shape, rules, halo, budget, opts.overlap, opts.border or "image")

    cropped = mc_dropout_runner(model) if mc_dropout else cropped_runner(net, probe)
    fmt = torch.contiguous_format if mc_dropout else fmt

    def forward(batch: np.ndarray, keep: tuple[tuple[int, int], ...]) -> np.ndarray:
        with torch.inference_mode():
            tiles = torch.from_numpy(batch).to(device).contiguous(memory_format=fmt)
            return cropped(tiles, keep).float().contiguous().cpu().numpy()

    run = flip_average(forward, entry.spatial_dims) if opts.tta else forward
    return predict_tiled(run, x, plan, out=out, batch_size=opts.batch_size, blend=opts.blend, prepare=prepare,
                         finish=finish, on_tile=on_tile, crop=True)


def mc_dropout_runner(model: Any) -> Callable[..., Any]:
    """A copy of the model's network with its dropout layers drawing anew on every call, cropped to the
    kept part of each tile; the model itself stays in eval mode."""
    import copy

    import torch

    net = copy.deepcopy(model.inference_model()).eval()
    layers = [m for m in net.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]
    for layer in layers:
        layer.train()

    def run(tiles: Any, keep: tuple[tuple[int, int], ...]) -> Any:
        return net(tiles)[(slice(None), slice(None), *(slice(lo, hi) for lo, hi in keep))]

    return run


def has_dropout(model: Any) -> bool:
    """Whether the model's network has dropout layers with a rate above 0 (what MC dropout samples)."""
    import torch

    return any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0
               for m in model.inference_model().modules())


def tile_halo(entry: Any, net: Any, wanted: list[int] | None = None) -> list[int]:
    """What each tile is cropped by per space axis: `wanted` (`Options.halo`), else the network's
    measured receptive field (exact tiling)."""
    from .halo import entry_halo  # measures with torch: imported only where a network is at hand

    wanted = halo_per_axis(wanted, [a.id for a in entry.inputs[0].space_axes])
    return entry_halo(entry, net)[0] if wanted is None else wanted


def postprocess(y: np.ndarray, entry: Any, probabilities: bool = False,
                options: Options | None = None) -> tuple[np.ndarray, list[str]]:
    """The entry's post-processing of a whole output, without a trained framework at hand (a zoo
    entry's package): segmentation labels (argmax, or thresholded) or the class probabilities;
    regression values as predicted (or a mask with a threshold); instances: the embeddings clustered."""
    opts = options or Options(probabilities=probabilities)
    if entry.mmv.task == "instance" and not opts.probabilities:  # the embeddings clustered as for a run
        from ..frameworks.embedseg.cluster import entry_labels

        return entry_labels(y, entry, opts.threshold), ["labels"]
    finish, names = task_postprocess(entry.mmv.task, list(entry.outputs[0].channel_names), opts)
    return finish(y), names


class RunPredictor(Predictor):
    """Predicts with a trained run: tiles cropped by the receptive-field halo, then the framework's
    post-processing (its `postprocess` per tile, its `finalize` on the whole image)."""

    streams = True

    def __init__(self, source: Any, probabilities: bool = False, overlap: float = 0.0,
                 model: Any = None, options: Options | None = None) -> None:
        """`source`: a run folder or checkpoint; `model`: a trained framework to use instead."""
        from ..run import load_model

        direction = options.direction if options is not None else None
        self.model = (load_model(source, direction=direction) if model is None else model).to(pick_device())
        self.entry = self.model.entry
        self.task = self.entry.mmv.task
        self.spatial_dims = self.entry.spatial_dims
        self.in_channels = self.entry.in_channels
        self.options = options or Options(probabilities=probabilities, overlap=overlap)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        return self.predict(x)

    def output_names(self) -> list[str]:
        return self.model.postprocess(self.options)[1]

    def predict(self, x: Any, out: Any = None, stats: Any = None,
                on_tile: Callable[[int, int], None] | None = None) -> tuple[Any, list[str]]:
        """(C, [Z], Y, X) array or lazy source -> (postprocessed output, its channel names); the output
        goes into `out` (an array, or a callable making one) tile by tile.

        A framework whose post-processing needs the whole image at once (instance clustering: objects
        crossing tile borders stay whole) returns it from `finalize(options)`: the whole blended output
        (what `postprocess` keeps of each tile) is then held in memory and the result written into
        `out` at the end."""
        finish, names = self.model.postprocess(self.options)
        finalize = self.model.finalize(self.options)
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
        return entry_pixel_sizes(from_file, self.entry)


class EntryPredictor(Predictor):
    """A zoo entry with pretrained weights: its package, with the entry's task postprocessing."""

    def __init__(self, entry: Any, probabilities: bool = False, trust_code: bool = False,
                 weight_format: str | None = None, options: Options | None = None) -> None:
        from ..remote.pretrained import entry_package
        from .verified_package import open_package

        self.entry, self.task = entry, entry.mmv.task
        self.package = entry_package(entry)
        self.inner = open_package(self.package.path, trust_code=trust_code, weight_format=weight_format,
                                      border=options.border if options else None, raw=True,
                                      halo=options.halo if options else None)
        self.spatial_dims, self.in_channels = self.inner.spatial_dims, self.inner.in_channels
        self.options = options or Options(probabilities=probabilities)
        self.labels_inside = getattr(self.inner, "labels_inside", False)
        if self.labels_inside:  # the package clusters inside its model: its labels are the result
            from .package_predictor import check_label_options

            check_label_options(entry.slug, self.options.probabilities, self.options.threshold, self.options.halo)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        y, names = self.inner(x)
        if self.labels_inside:
            return y, names
        return postprocess(y, self.entry, options=self.options)

    def output_names(self) -> list[str]:
        opts = self.options
        if self.entry.mmv.task == "instance" and (self.labels_inside or not opts.probabilities):
            return ["labels"]
        return task_postprocess(self.entry.mmv.task, list(self.entry.outputs[0].channel_names), opts)[1]

    def pixel_sizes(self, from_file: dict[str, float | None]) -> dict[str, float | None]:
        return entry_pixel_sizes(from_file, self.entry)


def entry_pixel_sizes(from_file: dict[str, float | None], entry: Any) -> dict[str, float | None]:
    """The input file's physical pixel sizes; where it has none, the entry's axis scales if set."""
    sizes = dict(from_file)
    for axis in entry.inputs[0].space_axes:
        if sizes.get(axis.id) is None and axis.unit is not None:
            sizes[axis.id] = axis.scale
    if entry.spatial_dims == 2:
        sizes["z"] = None
    return sizes
