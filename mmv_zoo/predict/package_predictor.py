"""Predict with any BioImage.IO model package (ours or anyone's) through bioimageio.core.

The package is validated (file hashes included), one weight format is chosen — TorchScript, then
ONNX; `pytorch_state_dict` runs the package's own Python architecture code and is used only with
`trust_code` — and that format must reproduce the package's test tensors before it predicts. The
package's pre- and postprocessing run through bioimageio.core; the network runs on tiles from
mmv_zoo's own tiler, cropped by the package's declared halo (so ours and others' packages tile alike).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import read_record, sha256_of, write_record
from ..errors import DataError, RunError
from ..run import RunFolder
from ..settings.embedseg import EmbedSegSettings
from ..settings.networks import SizeRule
from ..settings.predict import halo_per_axis
from .predictor import Predictor
from .tiler import DEFAULT_BUDGET, plan_tiles, predict_tiled, whole_image_padding

PACKAGE_FILES = ("rdf.yaml", "bioimageio.yaml")
SAFE_FORMATS = ("torchscript", "onnx")
CODE_FORMATS = ("pytorch_state_dict",)
MAX_BLOCK_N = 16
"""Largest block-size parameter n (block = min + n * step): bounds the memory of one block."""


def _declares_weights(rdf: Path) -> bool:
    """A model package's rdf lists weights; an mmv_zoo run's or zoo entry's resolved rdf.yaml does not."""
    import yaml

    try:
        data = yaml.safe_load(rdf.read_text())
    except (OSError, yaml.YAMLError):
        return True  # let the package loader say what is wrong with it
    return isinstance(data, dict) and bool(data.get("weights")) and not RunFolder.looks_like(rdf.parent)


def is_package(source: Path) -> bool:
    """A .zip, an rdf.yaml / *.bioimageio.yaml, or a folder holding one — but not a run folder."""
    if source.is_file():
        if source.suffix.lower() == ".zip":
            return True
        named = source.name in PACKAGE_FILES or source.name.endswith(".bioimageio.yaml")
        return named and _declares_weights(source)
    if source.is_dir():
        return any((source / n).is_file() and _declares_weights(source / n) for n in PACKAGE_FILES)
    return False


def _errors(summary: Any, limit: int = 3) -> str:
    msgs = []
    for d in getattr(summary, "details", []):
        for e in d.errors:
            loc = ".".join(map(str, e.loc))
            msgs.append(f"{loc + ': ' if loc else ''}{e.msg}"[:300])
        if msgs:
            break  # the first failing check; the upgrade to format 0.5 after it only repeats it, with noise
    return "; ".join(msgs[:limit]) or str(getattr(summary, "status", "invalid"))


def load_package(source: str | Path) -> Any:
    """The package's model description, upgraded to format 0.5; RunError when invalid or not a model."""
    from bioimageio.spec import InvalidDescr, load_description
    from bioimageio.spec.model import v0_5

    if "://" not in str(source) and not Path(source).exists():
        raise RunError(f"{source}: no such file or folder")  # never let it be looked up as a zoo id online
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            descr = load_description(source, format_version="latest", perform_io_checks=True)
        except Exception as e:
            raise RunError(f"{source}: cannot open as a BioImage.IO package ({str(e).splitlines()[0][:300]})") from None
    if isinstance(descr, InvalidDescr):
        raise RunError(f"{source}: not a valid BioImage.IO package ({_errors(descr.validation_summary)})")
    if not isinstance(descr, v0_5.ModelDescr):
        raise RunError(f"{source}: a BioImage.IO {getattr(descr, 'type', '?')}, not a model")
    class_labels = package_task(descr.config) == "segmentation" and [str(o.id) for o in descr.outputs[1:]] == ["labels"]
    if len(descr.inputs) != 1 or (len(descr.outputs) != 1 and not class_labels):
        raise RunError(f"{source}: {len(descr.inputs)} inputs and {len(descr.outputs)} outputs; "
                       "mmv-zoo predict takes packages with one of each")
    return descr  # mmv_zoo's segmentation packages: the probabilities, then their class labels (argmax)


def choose_weights(descr: Any, source: str | Path, trust_code: bool, wanted: str | None) -> list[str]:
    """Weight formats to try, best first; RunError naming what is missing when none can run."""
    present = [f for f in (*SAFE_FORMATS, *CODE_FORMATS) if getattr(descr.weights, f, None) is not None]
    if wanted is not None:
        if wanted not in present:
            raise RunError(f"{source}: has no {wanted} weights (it has {', '.join(present) or 'none we run'})")
        present = [wanted]
    runnable, reasons = [], []
    for fmt in present:
        if fmt in CODE_FORMATS and not trust_code:
            reasons.append(f"{fmt} runs the package's own Python code: pass --trust-code to allow it")
            continue
        if fmt in CODE_FORMATS:
            missing = missing_libraries(descr.weights.pytorch_state_dict.architecture)
            if missing:
                reasons.append(f"{fmt} needs the Python {'library' if len(missing) == 1 else 'libraries'} "
                               f"{', '.join(missing)}, not installed here (pip install {' '.join(missing)})")
                continue
        if fmt == "onnx":
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                reasons.append("onnx needs onnxruntime (pip install 'mmv_zoo[onnx]')")
                continue
        runnable.append(fmt)
    if not runnable:
        others = [f for f in ("keras_hdf5", "keras_v3", "tensorflow_saved_model_bundle", "tensorflow_js")
                  if getattr(descr.weights, f, None) is not None]
        more = f"; it also has {', '.join(others)} weights, which mmv_zoo does not run" if others else ""
        raise RunError(f"{source}: no weights mmv_zoo can run ({'; '.join(reasons) or 'none present'}{more})")
    return runnable


def missing_libraries(architecture: Any) -> list[str]:
    """Top-level modules a state-dict architecture imports (from a library, or in its source file)
    that are not installed here."""
    import ast
    import importlib.util

    modules: set[str] = set()
    if getattr(architecture, "import_from", None):
        modules.add(str(architecture.import_from))
    else:
        try:
            from bioimageio.spec._internal.io import get_reader

            text = get_reader(architecture.source, sha256=architecture.sha256).read().decode()
            tree = ast.parse(text)
        except Exception:  # unreadable or not Python: bioimageio.core's own test will say so
            return []
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)
    tops = sorted({m.split(".")[0] for m in modules})
    return [m for m in tops if importlib.util.find_spec(m) is None]


def package_digest(source: str | Path) -> str | None:
    """sha256 of a package zip, or of its rdf (which pins every file's sha256); None if neither is found."""
    p = Path(source)
    if p.is_dir():
        p = next((p / n for n in PACKAGE_FILES if (p / n).is_file()), p)
    return sha256_of(p) if p.is_file() else None


def test_formats(descr: Any, formats: list[str], digest: str | None = None, stop_early: bool = True,
                 use_cache: bool = True) -> dict[str, str]:
    """bioimageio.core's test_model per format: `passed` or the first error. Results are cached per
    package digest, so a package is verified once, not before every prediction."""
    from bioimageio.core import test_model

    known = read_record("verified", digest) if (digest and use_cache) else {}
    results = {}
    for fmt in formats:
        if fmt in known:
            results[fmt] = known[fmt]
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            summary = test_model(descr, weight_format=fmt, stop_early=stop_early)
        results[fmt] = "passed" if summary.status == "passed" else _errors(summary, 1)
        if summary.status == "passed" and stop_early:
            break
    if digest:
        write_record("verified", digest, {**read_record("verified", digest), **results})
    return results


@dataclass
class PackageTest:
    """bioimageio.core's test of every weight format a package has (`mmv-zoo test`)."""

    name: str
    results: dict[str, str]
    """Weight format -> `passed`, the first error, or `not run (needs --trust-code)`."""

    @property
    def passed(self) -> bool:
        """Every format that ran passed, and at least one ran."""
        ran = [v for v in self.results.values() if not v.startswith("not run")]
        return bool(ran) and all(v == "passed" for v in ran)


def package_tests(source: str | Path, trust_code: bool = False) -> PackageTest:
    """Run bioimageio.core's checks on every weight format of a package, afresh (no cached result);
    formats that run the package's own code only with `trust_code`."""
    descr = load_package(source)
    present = [f for f in (*SAFE_FORMATS, *CODE_FORMATS) if getattr(descr.weights, f, None) is not None]
    runnable = [f for f in present if trust_code or f not in CODE_FORMATS]
    results = test_formats(descr, runnable, package_digest(source), stop_early=False, use_cache=False)
    return PackageTest(str(descr.name), {f: results.get(f, "not run (needs --trust-code)") for f in present})


def verified_format(descr: Any, source: str | Path, formats: list[str]) -> tuple[str, list[str]]:
    """The first format whose weights reproduce the package's own test tensors, and warnings for the others."""
    results = test_formats(descr, formats, package_digest(source))
    problems = []
    for fmt in formats:
        if results.get(fmt) == "passed":
            return fmt, [f"{source}: skipped {p}" for p in problems]
        problems.append(f"{fmt} weights (they do not reproduce the test output: {results.get(fmt)})")
    raise RunError(f"{source}: refused, no weight format reproduces the package's test tensors: {'; '.join(problems)}")


def instance_settings(descr: Any, source: str | Path) -> Any:
    """The `embedseg` clustering settings of an mmv_zoo package of task `instance`; None otherwise."""
    return instance_config(descr.config, source)


def _mmv_config(config: Any) -> Any:
    """`config.mmv_zoo` of a package's config (a mapping, or a description's config object)."""
    return config.get("mmv_zoo") if hasattr(config, "get") else getattr(config, "mmv_zoo", None)


def package_task(config: Any) -> str | None:
    """The task an mmv_zoo package records in `config.mmv_zoo.task`; None for others' packages."""
    mmv = _mmv_config(config)
    task = mmv.get("task") if isinstance(mmv, dict) else None
    return task if task in ("segmentation", "regression", "instance") else None


def labels_inside(config: Any) -> bool:
    """An mmv_zoo instance package whose model outputs the labels (the clustering compiled into its
    TorchScript): its images are predicted whole, and nothing is clustered after it."""
    mmv = _mmv_config(config)
    return isinstance(mmv, dict) and mmv.get("task") == "instance" and mmv.get("package_output") == "labels"


def not_concatenable(tensor: Any) -> list[str]:
    """The space axes a package's input declares, in so many words, not concatenable (BioImage.IO's flag
    for "not to be predicted block by block", as a labels package of ours does). The flag left at its
    default is not read so: packages written without it are tiled by every consumer."""
    return [str(a.id) for a in tensor.axes
            if a.type == "space" and "concatenable" in a.model_fields_set and not a.concatenable]


def check_label_options(source: Any, probabilities: bool, threshold: float | None, halo: Any) -> None:
    """RunError for the options a labels package cannot honour, naming the option."""
    what = f"{source}: this package outputs instance labels clustered inside its model"
    if probabilities:
        raise RunError(f"{what}; --probabilities (the embeddings) needs the run or a package exported with "
                       "--embeddings")
    if threshold is not None:
        raise RunError(f"{what} at the seed threshold in its config.mmv_zoo.embedseg; --threshold needs the run "
                       "or a package exported with --embeddings")
    if halo is not None:
        raise RunError(f"{what}; it predicts whole images (labels cannot be stitched from tiles), so --halo "
                       "does not apply")


def labels_array(y: np.ndarray) -> np.ndarray:
    """A labels package's output (1, *S) as uint16 (uint32 beyond, which its model refuses anyway)."""
    from ..frameworks.embedseg.cluster import label_dtype

    return np.asarray(y).astype(label_dtype(int(np.max(y, initial=0))))


def instance_config(config: Any, source: str | Path) -> Any:
    """The `embedseg` settings in a package's `config` (a mapping with `mmv_zoo`) when its task is
    `instance` and its output the embeddings; None otherwise; RunError naming the field when they are
    invalid."""
    mmv = _mmv_config(config)
    if not isinstance(mmv, dict) or mmv.get("task") != "instance" or not isinstance(mmv.get("embedseg"), dict):
        return None
    if labels_inside(config):
        return None
    from pydantic import ValidationError

    try:
        return EmbedSegSettings.model_validate(mmv["embedseg"])
    except ValidationError as e:
        raise RunError(f"{source}: config.mmv_zoo.embedseg: {' '.join(str(e).split())[:300]}") from None


def postprocess_members(pipeline: Any, sample: Any) -> None:
    """The pipeline's postprocessing of the outputs `sample` holds (mmv_zoo stitches a package's first
    output only: a segmentation package's class labels, its second, are left out of the sample)."""
    ops = [*getattr(pipeline, "_blockwise_postprocessing", []), *getattr(pipeline, "_samplewise_postprocessing", [])]
    if all(getattr(op, "input", None) in sample.members for op in ops):
        pipeline.apply_postprocessing(sample)
        return
    for op in ops:
        if getattr(op, "input", None) in sample.members:
            op(sample)


class PackagePredictor(Predictor):
    """Runs a BioImage.IO model package on (C, [Z], Y, X) arrays."""

    def __init__(self, source: str | Path, trust_code: bool = False, weight_format: str | None = None,
                 border: str | None = None, raw: bool = False, seed_threshold: float | None = None,
                 halo: list[int] | None = None) -> None:
        """`raw=True` returns an instance package's embeddings instead of clustering them into labels
        (mmv_zoo packages of task `instance` carry their clustering settings in `config.mmv_zoo`);
        `halo` replaces the halo the package declares (pixels per space axis)."""
        from bioimageio.core import create_prediction_pipeline

        self.source = source
        self.border = border or "mirror"  # bioimageio.core pads the image by the halo, tiled or not
        self.descr = descr = load_package(source)
        self.input, self.output = descr.inputs[0], descr.outputs[0]
        kinds = {str(a.type) for a in self.input.axes}
        if not kinds <= {"batch", "channel", "space"}:
            raise RunError(f"{source}: input axes {sorted(kinds)}; mmv-zoo predict takes batch, channel and space axes")
        self.space_ids = [str(a.id) for a in self.input.axes if a.type == "space"]
        if self.space_ids not in (["y", "x"], ["z", "y", "x"]):
            raise RunError(f"{source}: input space axes {self.space_ids}; expected y, x or z, y, x")
        self.spatial_dims = len(self.space_ids)
        channel = next((a for a in self.input.axes if a.type == "channel"), None)
        self.in_channels = len(channel.channel_names) if channel is not None else 1
        out_channel = next((a for a in self.output.axes if a.type == "channel"), None)
        self.channel_names = [str(c) for c in out_channel.channel_names] if out_channel is not None else ["output"]
        self.weight_format, self.warnings = verified_format(
            descr, source, choose_weights(descr, source, trust_code, weight_format))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pipeline = create_prediction_pipeline(descr, weight_format=self.weight_format)
        self.plan_rules, self.halo = self._tiling()
        self.labels_inside = labels_inside(descr.config)
        self.whole = self.labels_inside or bool(not_concatenable(self.input))  # one tile, the halo around
        if halo is not None and self.whole and not self.labels_inside:
            raise RunError(f"{source}: --halo: the package declares its space axes {not_concatenable(self.input)} "
                           "not concatenable, so its images are predicted whole and no halo is chosen")
        if halo is not None and not self.whole:
            if self.plan_rules is None:
                raise DataError(f"{source}: --halo: this package's output is not its input's size, so "
                                "bioimageio.core tiles it with its own halo")
            self.halo = halo_per_axis(halo, self.space_ids)
        self.seed_threshold = seed_threshold
        self.instances = None if raw else instance_settings(descr, source)
        self.task = package_task(descr.config)

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(C, [Z], Y, X) in the package's raw input units -> (K, [Z], Y, X) after its postprocessing;
        for an mmv_zoo instance package, (1, [Z], Y, X) labels clustered from those embeddings."""
        y, names = self.outputs(x)
        if self.labels_inside:
            return labels_array(y), ["labels"]
        if self.instances is None:
            return y, names

        from ..frameworks.embedseg.cluster import settings_labels
        from ..frameworks.embedseg.embedding import axes_spacing

        scales = [float(a.scale) for a in self.input.axes if a.type == "space"]
        return settings_labels(y, self.instances, axes_spacing(scales), self.seed_threshold), ["labels"]

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(C, [Z], Y, X) in the package's raw input units -> (K, [Z], Y, X) after its postprocessing.

        The package's preprocessing runs on the whole image (its statistics are the image's), the
        network on tiles from mmv_zoo's tiler cropped by the package's halo, the postprocessing on
        the stitched output. Packages whose output is not the input's size (scaled or offset axes)
        are tiled by bioimageio.core instead.
        """
        if self.whole:
            return self._whole(x), self.channel_names
        if self.plan_rules is None:
            return self._predict_with_core_blocking(x)
        from bioimageio.core import Sample

        sample = self._sample(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.pipeline.apply_preprocessing(sample)
        pre = self._ours(sample.members[self.input.id], self.input.axes)
        plan = plan_tiles(pre.shape[1:], self.plan_rules, self.halo, DEFAULT_BUDGET[self.spatial_dims],
                          border=self.border)
        y = predict_tiled(self._forward, pre, plan, batch_size=1)
        out = Sample(members={self.output.id: self._theirs(y, self.output.axes)}, stat=sample.stat, id=sample.id)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            postprocess_members(self.pipeline, out)
        return np.asarray(self._ours(out.members[self.output.id], self.output.axes), np.float32), self.channel_names

    def _whole(self, x: np.ndarray) -> np.ndarray:
        """A package that must see whole images (a labels package, or one whose space axes are declared
        not concatenable) on one whole image through bioimageio.core, which pads it by the halo
        (symmetric; not with border `image`) and crops the output; padded first to a valid size."""
        if self.plan_rules is None:  # an output of another size: the image as given, core checks its size
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = self.pipeline.predict_sample_without_blocking(self._sample(x))
            return np.asarray(self._ours(out.members[self.output.id], self.output.axes), np.float32)
        halo = [0] * len(self.halo) if self.border == "image" else self.halo
        extra = whole_image_padding(x.shape[1:], self.plan_rules, halo)
        padded = np.pad(x, [(0, 0), *((0, e) for e in extra)], mode="symmetric")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.pipeline.predict_sample_without_blocking(
                self._sample(padded), skip_input_padding=self.border == "image",
                skip_output_cropping=self.border == "image")
        y = self._ours(out.members[self.output.id], self.output.axes)
        return np.asarray(y[(slice(None), *(slice(0, n) for n in x.shape[1:]))], np.float32)

    # ---- tiling with mmv_zoo's tiler

    def _tiling(self) -> tuple[list[Any] | None, list[int]]:
        """Size rules and halo per space axis when the output has the input's space size, else (None, [])."""
        from bioimageio.spec.model import v0_5

        in_axes = {str(a.id): a for a in self.input.axes if a.type == "space"}
        out_axes = {str(a.id): a for a in self.output.axes if a.type == "space"}
        rules, halo = [], []
        for axis_id in self.space_ids:
            a, o = in_axes[axis_id], out_axes.get(axis_id)
            if o is None or o.scale != a.scale:
                return None, []
            same = (isinstance(o.size, v0_5.SizeReference) and str(o.size.tensor_id) == str(self.input.id)
                    and str(o.size.axis_id) == axis_id and not o.size.offset)
            if not (same or (isinstance(o.size, int) and o.size == a.size)):
                return None, []
            if isinstance(a.size, v0_5.ParameterizedSize):
                rules.append(SizeRule(min=a.size.min, step=a.size.step))
            elif isinstance(a.size, int):
                rules.append(SizeRule(min=a.size, step=0))
            else:
                return None, []
            halo.append(int(getattr(o, "halo", 0) or 0))
        return rules, halo

    def _sample(self, x: np.ndarray) -> Any:
        from bioimageio.core.digest_spec import create_sample_for_model

        return create_sample_for_model(self.descr, inputs={self.input.id: self._theirs(x, self.input.axes)})

    def _theirs(self, x: np.ndarray, axes: Any) -> Any:
        """(C, *S) or (B, C, *S) numpy -> a Tensor in the package's axis order for `axes`."""
        from bioimageio.core import Tensor

        batched = x.ndim == 2 + self.spatial_dims
        ours = {"channel": 1 if batched else 0, **{a: i + (2 if batched else 1) for i, a in enumerate(self.space_ids)}}
        dims, order = [], []
        for axis in axes:
            dims.append(str(axis.id))
            if axis.type == "batch":
                order.append(0 if batched else None)
            else:
                order.append(ours["channel" if axis.type == "channel" else str(axis.id)])
        if not any(a.type == "channel" for a in axes):
            x = x[:, 0] if batched else x[0]
            ours = {k: v - 1 for k, v in ours.items() if k != "channel"}
            order = [None if o is None else (o if o == 0 and batched else o - 1) for o in order]
        arr = np.transpose(x.astype(np.float32, copy=False), [o for o in order if o is not None])
        for i, o in enumerate(order):
            if o is None:
                arr = np.expand_dims(arr, i)
        return Tensor.from_numpy(arr, dims=dims)

    def _ours(self, t: Any, axes: Any, batched: bool = False) -> np.ndarray:
        """A Tensor in the package's axis order -> (C, *S) numpy (or (B, C, *S) with `batched`)."""
        want = [str(a.id) for a in axes if a.type == "channel"] + self.space_ids
        batch = [str(a.id) for a in axes if a.type == "batch"]
        data = np.asarray(t.transpose([*batch, *want]).data.values)
        if not batch:
            data = data[None]
        if not any(a.type == "channel" for a in axes):
            data = data[:, None]
        return data if batched else data[0]


    def _forward(self, tiles: np.ndarray) -> np.ndarray:
        """(B, C, *tile) preprocessed -> (B, K, *tile) raw network output, one tile at a time."""
        from bioimageio.core import Sample

        outs = []
        for tile in tiles:
            sample = Sample(members={self.input.id: self._theirs(tile, self.input.axes)}, stat={}, id=None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                y = self.pipeline.predict_sample_without_blocking(
                    sample, skip_preprocessing=True, skip_postprocessing=True, skip_input_padding=True,
                    skip_output_cropping=True)
            outs.append(self._ours(y.members[self.output.id], self.output.axes))
        return np.stack(outs)

    # ---- fallback: bioimageio.core's own blocking

    def _predict_with_core_blocking(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        shape = x.shape[1:]
        x, ns = self._fit(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                result = self.pipeline.predict_sample_with_blocking(self._sample(x), ns=ns)
            except ValueError as e:
                raise DataError(f"{self.source}: the package cannot take this image ({str(e)[:200]})") from None
        data = self._ours(result.members[self.output.id], self.output.axes)
        data = data[(slice(None), *(slice(0, n) for n in shape))]  # drop our padding
        return np.asarray(data, dtype=np.float32), self.channel_names

    def _fit(self, x: np.ndarray) -> tuple[np.ndarray, dict[tuple[Any, Any], int]]:
        """Pad images smaller than the package's minimum size; block size parameters that fit the image."""
        from bioimageio.spec.model import v0_5

        from ..data.dataset import pad_to

        axes = {str(a.id): a for a in self.input.axes if a.type == "space"}
        need, ns = [], {}
        for axis_id, n in zip(self.space_ids, x.shape[1:], strict=True):
            size = axes[axis_id].size
            if isinstance(size, v0_5.ParameterizedSize):
                need.append(max(n, size.min))
                ns[(self.input.id, axes[axis_id].id)] = max(0, min(MAX_BLOCK_N, (need[-1] - size.min) // size.step))
            elif isinstance(size, int):
                need.append(max(n, size))
            else:
                need.append(n)
        return pad_to(x, need), ns

    def output_names(self) -> list[str]:
        return ["labels"] if self.instances is not None or self.labels_inside else self.channel_names
