"""Evaluate a model on a labelled data folder: predict every source image (or take predictions already
written), score each against its target with the task's metrics, and write `metrics.csv`, the
predictions and a figure (input | prediction | truth | errors) into the output folder.

The task decides the metrics (see `mmv_zoo.metrics`): regression -> Pearson, SSIM, PSNR (against the
target normalized as the entry normalizes training targets, so prediction and truth are in the same
units); segmentation -> F1 and IoU per class (targets mapped as `data.labels` says); instance ->
AP at IoU 0.5, mean AP over IoU 0.5:0.05:0.95 and foreground F1. Below the images, `mean` averages
the per-image scores and `pooled` scores the counts summed over all images (pixels for
segmentation, objects for instances), which an image with nothing in it cannot skew.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import metrics
from ..data.pairs import Pair, find_pairs, split_pairs
from ..errors import DataError
from ..io.read import image_stem, is_image, read_image
from ..io.write import check_writable, make_folder, temporary_path
from ..settings.data import DataSettings, PairedFolders
from ..transforms.normalize import mask_cutoff

TASKS = ("regression", "segmentation", "instance")
FIGURE_IMAGES = 4
"""Rows of the figure: the first images, in name order."""
INSTANCE_COUNTS = ("n_true", "n_pred", "tp50", "fp50", "fn50")


@dataclass
class Scoring:
    """What scoring needs to know of the model: from its entry, its package's config or the options."""

    task: str | None
    name: str
    spatial_dims: int | None = None
    class_names: list[str] | None = None
    labels: str = "classes"
    """The entry's `data.labels`: `foreground` maps every non-zero target value to class 1."""
    target_norm: Any = None
    data: DataSettings | None = None
    val_files: list[str] | None = None
    """Names of the pairs the run held back for validation (run.json), when known."""
    mask_cutoff: float | None = None
    """A generator of masks (e.g. CycleGAN image -> mask): scored as a segmentation of its output cut here."""


@dataclass
class ImageResult:
    name: str
    source: Path
    target: Path
    prediction: Path
    scores: dict[str, float]
    counts: Any = None
    """What the pooled row sums: a confusion matrix (segmentation) or per-threshold matchings."""


@dataclass
class Evaluation:
    task: str
    columns: list[str]
    images: list[ImageResult]
    summary: dict[str, dict[str, float]]
    """`mean` (and `pooled` for segmentation and instances) -> scores."""
    out: Path
    metrics_csv: Path
    figure: Path
    predictions: Path
    notes: list[str] = field(default_factory=list)


AFFINE_NOTE = ("self-supervised denoiser: each prediction is scored after the least-squares affine fit of its "
               "values onto the clean reference (its output is in the noisy input's normalized units), as "
               "CSBDeep's norm_minmse and the N2V papers do")


# ---- what the model says

def _as_mask_model(spec: Scoring) -> Scoring:
    """A regression model whose output is a mask domain is scored as a two-class segmentation (foreground
    F1 and IoU against any non-zero target value), its output cut in the middle of the mask's values."""
    cut = mask_cutoff(spec.task, spec.target_norm)
    if cut is None:
        return spec
    return replace(spec, task="segmentation", labels="foreground", class_names=["background", "foreground"],
                   mask_cutoff=cut)


def _from_entry(entry: Any, name: str, val_files: list[str] | None) -> Scoring:
    mmv = entry.mmv
    return _as_mask_model(Scoring(
        task=mmv.task, name=name, spatial_dims=entry.spatial_dims,
        class_names=[str(c) for c in entry.outputs[0].channel_names], labels=mmv.data.labels,
        target_norm=mmv.data.normalization.target, data=mmv.data, val_files=val_files))


def _from_package(descr: Any, name: str) -> Scoring:
    """Our packages carry the entry's settings in config.mmv_zoo; anyone's else only axes."""
    own = (descr.config.model_extra or {}).get("mmv_zoo") or {}
    space = [a for a in descr.inputs[0].axes if a.type == "space"]
    chan = next((a for a in descr.outputs[0].axes if a.type == "channel"), None)
    spec = Scoring(task=own.get("task"), name=name, spatial_dims=len(space),
                   class_names=[str(c) for c in chan.channel_names] if chan is not None else None)
    try:
        spec.data = DataSettings.model_validate(own["data"])
    except Exception:  # noqa: BLE001 - not ours, or another version's: layout and labels from the defaults
        return spec
    spec.labels, spec.target_norm = spec.data.labels, spec.data.normalization.target
    spec.val_files = (own.get("run") or {}).get("val_files")
    return _as_mask_model(spec)


def _source_name(source: str | Path) -> str:
    p = Path(source)
    if p.name.lower() in ("rdf.yaml", "rdf.yml", "bioimageio.yaml"):
        p = p.parent
    return image_stem(p) if p.suffix.lower() in (".zip", ".ckpt", ".yaml", ".yml") else p.name


def describe(source: str | Path) -> Scoring:
    """The scoring settings of SOURCE (a run, checkpoint, package or zoo entry), from its entry or
    package description: no network is loaded (except for a checkpoint outside its run folder)."""
    from ..predict.package_predictor import load_package
    from ..predict.sources import resolve_source
    from ..run import load_model

    src, name = resolve_source(source), _source_name(source)
    if src.kind == "package":
        return _from_package(load_package(source), name)
    if src.kind == "entry":
        return _from_entry(src.entry, name, None)
    run = src.run
    if run is None or not run.entry_path.is_file():
        return _from_entry(load_model(src.path).entry, name, None)  # the entry stored in the checkpoint
    info, entry = run.info, run.entry()
    name = f"{entry.slug}/{run.folder.name}" + (f"-{name}" if src.kind == "checkpoint" else "")
    return _from_entry(entry, name, info.get("val_files"))


# ---- which pairs

def _layout(spec: Scoring) -> Any:
    layout = spec.data.layout if spec.data is not None else PairedFolders(layout="paired_folders")
    if layout.layout == "unpaired_folders":  # CycleGAN: scored on paired test data in the same folder names
        return PairedFolders(layout="paired_folders", source=layout.source, target=layout.target)
    if layout.layout == "source_folder":  # self-supervised denoising: scored against clean references
        return PairedFolders(layout="paired_folders", source=layout.source, target=layout.reference)
    # exclusion masks only take pixels out of the training loss: scores use every pixel, need no masks
    if not layout.has_exclusion:
        return layout
    return layout.model_copy(update={"exclusion" if layout.layout == "paired_folders" else "exclusion_column": None})


def eval_pairs(root: Path, spec: Scoring, split: str = "all") -> list[Pair]:
    """Every pair in `root` (a presplit folder: train/ and val/ together), or with split `val` the
    pairs the run held back (run.json), else the entry's split of `root`."""
    if split not in ("all", "val"):
        raise DataError(f"--split {split!r}: choose all or val")
    layout = _layout(spec)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist" if not root.exists()
                        else f"{root}: is a file; --data takes the folder that holds the images and targets")
    if split == "all":
        presplit = (spec.data is not None and spec.data.split.kind == "presplit" and layout.layout != "csv"
                    and not (root / layout.source).is_dir() and (root / "train").is_dir())
        if presplit:
            return find_pairs(root / "train", layout)[0] + find_pairs(root / "val", layout)[0]
        return find_pairs(root, layout)[0]
    if spec.val_files:
        everything = eval_pairs(root, spec, "all")
        held = [p for p in everything if p.name in set(spec.val_files)]
        if not held:
            raise DataError(f"{root}: none of the run's validation images ({', '.join(spec.val_files[:5])}) "
                            "is in this folder; use --split all")
        return held
    if spec.data is None:
        raise DataError("--split val: the model does not record its split; use --split all")
    return split_pairs(root, spec.data.model_copy(update={"layout": layout}))[1]


def _check_names(pairs: list[Pair]) -> None:
    seen: dict[str, Path] = {}
    for p in pairs:
        if p.name in seen and seen[p.name] != p.source:
            raise DataError(f"{seen[p.name]} and {p.source}: two sources of the same name; their predictions "
                            "would clash (rename one)")
        seen[p.name] = p.source


def _find_prediction(pair: Pair, found: dict[str, Path]) -> Path | None:
    for stem in (image_stem(pair.source), image_stem(pair.target)):
        if stem in found:
            return found[stem]
    return None


# ---- scoring one image

def _dims(spec: Scoring, target: Path) -> int:
    if spec.spatial_dims is not None:
        return spec.spatial_dims
    from ..io.source import open_image

    with open_image(target) as src:
        return 3 if src.scene(0).Z > 1 else 2


def _labels(x: np.ndarray, path: Path, what: str) -> np.ndarray:
    if x.shape[0] != 1:
        hint = " (probabilities or embeddings? predict without --probabilities)" if what == "prediction" else ""
        raise DataError(f"{path}: {what} has {x.shape[0]} channels{hint}; label images have one")
    try:
        return metrics.as_labels(x[0], what)
    except ValueError as e:
        raise DataError(f"{path}: {e}") from None


def _n_classes(spec: Scoring) -> int | None:
    """The model's class count; None without a model (then the largest label value + 1 decides)."""
    if spec.task is None:
        return None
    return len(spec.class_names) if spec.class_names and len(spec.class_names) > 1 else 2


def _class_columns(spec: Scoring, n: int) -> list[str]:
    names = spec.class_names if spec.class_names and len(spec.class_names) == n else [f"class{c}" for c in range(n)]
    cols = [f"{m}_{names[c]}" for c in range(1, n) for m in ("f1", "iou")]
    return cols + (["f1_mean", "iou_mean"] if n > 2 else [])


def _segmentation(pred: np.ndarray, truth: np.ndarray, spec: Scoring, pair: Pair,
                  pred_path: Path) -> tuple[dict[str, float], np.ndarray]:
    p, t = _labels(pred, pred_path, "prediction"), _labels(truth, pair.target, "truth")
    if spec.labels == "foreground":
        t = (t > 0).astype(np.int64)
    n = _n_classes(spec)
    for arr, path, what in ((t, pair.target, "truth"), (p, pred_path, "prediction")):
        if n is not None and arr.size and arr.max() >= n:
            raise DataError(f"{path}: {what} label values up to {int(arr.max())} but the model has {n} classes"
                            + (" (instance labels? the entry's data.labels: foreground maps them to 1)"
                               if what == "truth" else ""))
    cm = metrics.confusion_matrix(p, t, n or 2)
    return _class_row(cm, spec), cm


def _class_labels(pred: np.ndarray, spec: Scoring, path: Path) -> np.ndarray:
    """Labels as they are; class probabilities or scores (one channel per class, e.g. a package's raw
    output or `predict --probabilities`) -> labels by argmax over the channels."""
    if pred.shape[0] == 1:
        return pred
    n = _n_classes(spec)
    if n is not None and pred.shape[0] != n:
        raise DataError(f"{path}: prediction has {pred.shape[0]} channels but the model has {n} classes; "
                        "give label images or one probability channel per class")
    return pred.argmax(0)[None].astype(np.uint16)


def _class_row(cm: np.ndarray, spec: Scoring) -> dict[str, float]:
    s, n = metrics.scores_from_confusion(cm), cm.shape[0]
    cols = _class_columns(spec, n)
    row = {}
    for c in range(1, n):
        row[cols[2 * (c - 1)]], row[cols[2 * (c - 1) + 1]] = float(s["f1"][c]), float(s["iou"][c])
    if n > 2:
        row["f1_mean"], row["iou_mean"] = float(s["f1"][1:].mean()), float(s["iou"][1:].mean())
    return row


def _instance(pred: np.ndarray, truth: np.ndarray, pair: Pair, pred_path: Path) -> tuple[dict[str, float], Any]:
    p, t = _labels(pred, pred_path, "prediction"), _labels(truth, pair.target, "truth")
    matches = metrics.match_instances(p, t, metrics.AP_THRESHOLDS)
    fg = (int(np.count_nonzero((p > 0) & (t > 0))), int(np.count_nonzero(p)), int(np.count_nonzero(t)))
    row = {"ap50": matches[0].ap, "ap50_95": float(np.mean([m.ap for m in matches])),
           "f1_foreground": metrics.foreground_scores(p, t)["f1"]}
    m = matches[0]
    row.update(n_true=m.n_true, n_pred=m.n_pred, tp50=m.tp, fp50=m.fp, fn50=m.fn)
    return row, ([(x.tp, x.n_true, x.n_pred) for x in matches], fg, m.pairs)


def _regression(pred: np.ndarray, truth: np.ndarray, spec: Scoring, pair: Pair, pred_path: Path) -> dict[str, float]:
    from ..transforms.normalize import normalize

    if not np.issubdtype(pred.dtype, np.number):
        raise DataError(f"{pred_path}: prediction of type {pred.dtype} is not an image")
    if pred.shape[0] != truth.shape[0]:
        raise DataError(f"{pred_path}: prediction has {pred.shape[0]} channel(s), its truth {pair.target.name} "
                        f"{truth.shape[0]}")
    t = normalize(truth, spec.target_norm) if spec.target_norm is not None else truth
    p = pred.astype(np.float64)
    if _self_supervised(spec):  # a denoiser outputs its input's normalized units: fit them onto the reference
        p = metrics.affine_fit(p, np.asarray(t, np.float64))
    return metrics.regression_scores(p, np.asarray(t, np.float64))


def _self_supervised(spec: Scoring) -> bool:
    return spec.data is not None and spec.data.layout.layout == "source_folder"


def columns_for(task: str, spec: Scoring) -> list[str]:
    if task == "regression":
        return ["pearson", "ssim", "psnr"]
    if task == "segmentation":
        return _class_columns(spec, _n_classes(spec) or 2)
    return ["ap50", "ap50_95", "f1_foreground", *INSTANCE_COUNTS]


def _summary(task: str, spec: Scoring, images: list[ImageResult], columns: list[str]) -> dict[str, dict[str, float]]:
    with np.errstate(all="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a column of NaN (constant images) stays NaN
            mean = {c: float(np.nanmean([r.scores[c] for r in images])) for c in columns}
    if task == "regression":
        return {"mean": mean}
    if task == "segmentation":
        return {"mean": mean, "pooled": _class_row(sum(r.counts for r in images), spec)}
    per_thr = np.array([r.counts[0] for r in images]).sum(0)  # (thresholds, [tp, n_true, n_pred])
    aps = [metrics.safe_ratio(tp, nt + npred - tp) for tp, nt, npred in per_thr]
    inter, np_, nt = np.array([r.counts[1] for r in images]).sum(0)
    tp, n_true, n_pred = (int(v) for v in per_thr[0])
    pooled = {"ap50": aps[0], "ap50_95": float(np.mean(aps)), "f1_foreground": metrics.safe_ratio(2 * inter, np_ + nt),
              "n_true": n_true, "n_pred": n_pred, "tp50": tp, "fp50": n_pred - tp, "fn50": n_true - tp}
    return {"mean": mean, "pooled": pooled}


# ---- the whole evaluation

def evaluate(source: str | Path | None, data: Path, out: Path | None = None, predictions: Path | None = None,
             task: str | None = None, split: str = "all", trust_code: bool = False,
             on_image: Callable[[ImageResult], None] | None = None, uncertainty: str | None = None,
             samples: int | None = None, members: list[str] | None = None) -> Evaluation:
    """Score SOURCE (or the predictions in `predictions`) on every pair of `data`; see the module doc.
    With `uncertainty` (see predict.uncertainty), each prediction comes with its uncertainty map and
    the scores say how well the map ranks the prediction's errors (`metrics.uncertainty_scores`)."""
    if task is not None and task not in TASKS:
        raise DataError(f"--task {task!r}: choose regression, segmentation or instance")
    if source is None and predictions is None:
        raise DataError("give a model (SOURCE) to predict with, or --predictions DIR with images already predicted")
    if uncertainty is not None and (source is None or predictions is not None):
        raise DataError("--uncertainty: give a model (SOURCE) to predict with, not --predictions")
    data = Path(data)
    spec = describe(source) if source is not None else Scoring(task=None, name=Path(predictions).name)
    if task is not None and spec.task is not None and task != spec.task:
        if predictions is None:
            raise DataError(f"--task {task}: {source} is a {spec.task} model; drop --task or give --task "
                            f"{spec.task}")
        spec = replace(spec, task=None, class_names=None)  # SOURCE gives only the data layout and labels
    task = task or spec.task
    if task is None:
        what = f"{source} does not record its task" if source is not None else "without a model (SOURCE)"
        raise DataError(f"--task is needed: {what}; give --task regression, segmentation or instance")
    if task not in TASKS:
        raise DataError(f"{source}: task {task!r} cannot be evaluated (tasks: {', '.join(TASKS)})")
    pairs = eval_pairs(data, spec, split)
    _check_names(pairs)
    out = Path(out) if out is not None else Path("evaluation") / spec.name
    check_writable(out)
    notes: list[str] = []
    if predictions is None:
        from ..predict.sources import open_predictor

        pred_dir = out / "predictions"
        if uncertainty is not None:
            from ..predict.engine import Options
            from ..predict.uncertainty import open_uncertain

            predictor = open_uncertain([source, *(members or [])], uncertainty, Options(), samples, trust_code)
        else:
            from ..settings.predict import Options

            # a mask generator's run outputs raw values: cut them (its packages output the mask already)
            predictor = open_predictor(source, trust_code=trust_code, options=Options(threshold=spec.mask_cutoff))
        pred_for = _predict_all(predictor, pairs, pred_dir)
    else:
        pred_dir = Path(predictions)
        if not pred_dir.is_dir():
            raise DataError(f"{pred_dir}: --predictions folder does not exist")
        found = {image_stem(p): p for p in sorted(pred_dir.iterdir()) if is_image(p)}
        pred_for = {p.name: _find_prediction(p, found) for p in pairs}
        missing = [p.source.name for p in pairs if pred_for[p.name] is None]
        if missing:
            raise DataError(f"{pred_dir}: no prediction for {', '.join(missing[:5])}"
                            f"{' ...' if len(missing) > 5 else ''} (matched by file name without extension)")
    columns = columns_for(task, spec)
    images: list[ImageResult] = []
    panels: list[tuple[str, np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]] = []
    for pair in pairs:
        result, panel = _score_pair(task, spec, pair, pred_for[pair.name], len(panels) < FIGURE_IMAGES, notes,
                                    uncertainty is not None)
        images.append(result)
        if panel is not None:
            panels.append(panel)
        if on_image is not None:
            on_image(result)
    if task == "segmentation":  # every image scored over the same classes (without a model: all seen)
        n = max(r.counts.shape[0] for r in images)
        columns = _class_columns(spec, n)
        for r in images:
            r.counts = np.pad(r.counts, (0, n - r.counts.shape[0]))
            r.scores = {**_class_row(r.counts, spec), **{k: v for k, v in r.scores.items()
                                                          if k.startswith("uncertainty_")}}
    if uncertainty is not None:
        columns += [c for c in images[0].scores if c.startswith("uncertainty_")]
    summary = _summary(task, spec, images, columns)
    for row in summary.values():  # pooled rows: the uncertainty columns are the mean over images
        row.update({c: summary["mean"][c] for c in columns if c.startswith("uncertainty_")})
    make_folder(out)
    csv_path = _write_csv(out / "metrics.csv", columns, images, summary)
    from .figure import write_figure

    figure = write_figure(out / "evaluation.png", task, panels, f"{spec.name}: {task}")
    return Evaluation(task, columns, images, summary, out, csv_path, figure, pred_dir, notes)


def _predict_all(predictor: Any, pairs: list[Pair], folder: Path) -> dict[str, Path]:
    """Predict the first scene of every source into `folder` (replacing earlier evaluations' outputs)."""
    from ..predict.files import Selection, predict_file

    done = {}
    for pair in pairs:
        (result,) = predict_file(predictor, pair.source, folder, Selection(scenes=[0]), overwrite=True)
        done[pair.name] = result.output
    return done


def _score_pair(task: str, spec: Scoring, pair: Pair, pred_path: Path, keep_panel: bool,
                notes: list[str], with_uncertainty: bool = False) -> tuple[ImageResult, Any]:
    dims = _dims(spec, pair.target)
    truth = read_image(pair.target, dims).data
    pred = read_image(pred_path, dims).data
    if pred.shape[1:] != truth.shape[1:]:
        raise DataError(f"{pred_path}: prediction shape {tuple(pred.shape[1:])} differs from its truth "
                        f"{pair.target} {tuple(truth.shape[1:])}")
    counts, matched = None, None
    if task == "regression":
        scores = _regression(pred, truth, spec, pair, pred_path)
        if _self_supervised(spec) and AFFINE_NOTE not in notes:
            notes.append(AFFINE_NOTE)
    elif task == "segmentation":
        pred = _class_labels(pred, spec, pred_path)
        scores, counts = _segmentation(pred, truth, spec, pair, pred_path)
    else:
        scores, counts = _instance(pred, truth, pair, pred_path)
        matched = counts[2]
        if scores["n_pred"] == 1 and scores["n_true"] > 1 and int(pred.max()) == 1:
            notes.append(f"{pred_path.name}: holds one object of value 1 (a mask, not instance labels?)")
    from ..predict.uncertainty import SUFFIX

    companion = pred_path.with_name(pred_path.name.replace(image_stem(pred_path), image_stem(pred_path) + SUFFIX, 1))
    if with_uncertainty and task != "instance":
        scores.update(_uncertainty(companion, pred, truth, task, spec, pair, dims))
    result = ImageResult(pair.name, pair.source, pair.target, pred_path, scores, counts)
    if not keep_panel:
        return result, None
    from .figure import panel

    image = read_image(pair.source, dims).data
    return result, panel(task, spec, pair.name, image, pred, truth, matched, scores)


def _uncertainty(path: Path, pred: np.ndarray, truth: np.ndarray, task: str, spec: Scoring, pair: Pair,
                 dims: int) -> dict[str, float]:
    """How well the uncertainty map at `path` ranks the errors of `pred` against `truth`."""
    u = read_image(path, dims).data.astype(np.float64)
    if task == "segmentation":
        t = _labels(truth, pair.target, "truth")
        t = (t > 0).astype(t.dtype) if spec.labels == "foreground" else t
        error = (pred.reshape(t.shape) != t).reshape((1, *u.shape[1:]))
    else:
        from ..transforms.normalize import normalize

        t = normalize(truth, spec.target_norm) if spec.target_norm is not None else truth
        error = np.abs(pred.astype(np.float64) - np.asarray(t, np.float64))
    if u.shape[1:] != error.shape[1:] or u.shape[0] not in (1, error.shape[0]):
        raise DataError(f"{path}: uncertainty map of shape {u.shape} for errors of shape {error.shape} (a model "
                        f"of another task than {task}?)")
    u = np.broadcast_to(u, error.shape) if u.shape[0] == 1 else u
    return metrics.uncertainty_scores(u, error)


def _fmt(v: Any) -> str:
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return repr(float(v))  # round-trips: nan, inf and every digit


def _write_csv(path: Path, columns: list[str], images: list[ImageResult], summary: dict[str, dict[str, float]]) -> Path:
    tmp = temporary_path(path)
    try:
        with tmp.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", *columns, "source", "target", "prediction"])
            for r in images:
                w.writerow([r.name, *(_fmt(r.scores[c]) for c in columns), r.source, r.target, r.prediction])
            for label, row in summary.items():
                w.writerow([label, *(_fmt(row[c]) for c in columns), "", "", ""])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
