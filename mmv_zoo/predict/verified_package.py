"""Predict with a BioImage.IO package that bioimageio.core has verified here, without importing it again.

A package file is validated and tested by bioimageio.core once (its weights must reproduce the
package's own test tensors); the verdict per weight format is kept in the cache under the file's
sha256. Predicting needs only the weights, the pre- and post-processing and the tiler:
`VerifiedPackage` reads the rdf.yaml with PyYAML, applies the spec's operations in numpy as
bioimageio.core computes them (`_operation` lists the ones covered), runs the network on mmv_zoo's
tiles (the package's halo, the plan `PackagePredictor` uses) and clusters an mmv_zoo instance
package's embeddings the same way. The network runs as ONNX through onnxruntime when it is installed
and the package has verified ONNX weights (no torch import at all: the fastest start, on the CPU or
onnxruntime's GPU providers), else as TorchScript (on a GPU when torch sees one). A cold `mmv-zoo
predict ENTRY IMAGE` then imports neither bioimageio.core nor Lightning nor MONAI.

`open_package` chooses: a package whose every part is covered gets `VerifiedPackage` (verified first
if this file never was); anything else (other operations, axes or weight formats, or code weights)
`PackagePredictor`, which runs the package through bioimageio.core.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import platform
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..cache import read_record, write_record
from ..settings.networks import SizeRule
from ..settings.predict import halo_per_axis
from .package_predictor import (
    PACKAGE_FILES,
    PackagePredictor,
    instance_config,
    package_digest,
    package_task,
)
from .predictor import Predictor
from .tiler import DEFAULT_BUDGET, plan_tiles, predict_tiled

Op = Callable[[np.ndarray], np.ndarray]
EPS = 1e-6
"""bioimageio.core divides by (range + 1e-6) and (std + 1e-6) whatever eps a package declares."""


def open_package(source: str | Path, trust_code: bool = False, weight_format: str | None = None,
                 border: str | None = None, raw: bool = False, seed_threshold: float | None = None,
                 halo: list[int] | None = None) -> Predictor:
    """The predictor of a package: `VerifiedPackage` when every part of it is covered and its chosen
    weights pass bioimageio.core's test (run once per file), else `PackagePredictor`."""
    fast = VerifiedPackage.open(source, weight_format, border, raw, seed_threshold, halo)
    if fast is not None:
        return fast
    return PackagePredictor(source, trust_code=trust_code, weight_format=weight_format, border=border, raw=raw,
                            seed_threshold=seed_threshold, halo=halo)


class VerifiedPackage(Predictor):
    """A verified package's TorchScript or ONNX weights on (C, [Z], Y, X) arrays; see the module doc."""

    def __init__(self, source: str | Path, rdf: dict[str, Any], weight_format: str, weights: bytes,
                 pre: list[Op], post: list[Op], rules: list[SizeRule], halo: list[int], border: str | None,
                 instances: Any, seed_threshold: float | None) -> None:
        self.source, self.weight_format = source, weight_format
        inp, out = rdf["inputs"][0], rdf["outputs"][0]
        spaces = [a for a in inp["axes"] if a["type"] == "space"]
        self.space_ids = [str(a["id"]) for a in spaces]
        self.spatial_dims = len(self.space_ids)
        self.in_channels = len(_channel_axis(inp["axes"])["channel_names"])
        self.channel_names = [str(c) for c in _channel_axis(out["axes"])["channel_names"]]
        self.scales = [float(a.get("scale", 1.0)) for a in spaces]
        self.pre, self.post, self.rules, self.halo = pre, post, rules, halo
        self.border = border or "mirror"  # as bioimageio.core, which pads the image by the halo
        self.instances, self.seed_threshold = instances, seed_threshold
        self.task = package_task(rdf.get("config") or {})
        self._run = _onnx_runner(weights) if weight_format == "onnx" else _torchscript_runner(weights)

    @classmethod
    def open(cls, source: str | Path, weight_format: str | None = None, border: str | None = None,
             raw: bool = False, seed_threshold: float | None = None, halo: list[int] | None = None,
             verify: bool = True) -> VerifiedPackage | None:
        """The fast predictor of `source`, or None when it must go through bioimageio.core. A package
        this file's sha256 was never tested for is tested first (bioimageio.core, once) when `verify`."""
        files = PackageFiles.of(Path(source))
        rdf = files.rdf() if files is not None else None
        if files is None or rdf is None or not _single_tensors(rdf):
            return None
        inp, out = rdf["inputs"][0], rdf["outputs"][0]
        tiling = _tiling(inp, out)
        pre = _operations(inp.get("preprocessing") or [], inp["axes"])
        post = _operations(out.get("postprocessing") or [], out["axes"])
        candidates = _candidates(rdf, weight_format)
        digest = package_digest(source)
        if tiling is None or pre is None or post is None or not candidates or digest is None:
            return None
        verdicts = read_record("verified", digest)
        if verify and any(f not in verdicts for f in candidates):
            verdicts = _verify(source, candidates, digest)
        chosen = next((f for f in candidates if verdicts.get(f) == "passed"), None)
        if chosen is None:
            return None  # PackagePredictor says why no format can be used
        entry = rdf["weights"][chosen]
        weights = files.read(entry["source"])
        if files.zip_path is None and not entry.get("sha256"):
            return None  # a folder's digest is its rdf's: weights without a hash there could change unseen
        if weights is None or (entry.get("sha256") and hashlib.sha256(weights).hexdigest() != entry["sha256"]):
            return None  # PackagePredictor's validation names the file that does not match
        rules, package_halo = tiling
        if halo is not None:
            package_halo = halo_per_axis(halo, [str(a["id"]) for a in inp["axes"] if a["type"] == "space"])
        instances = None if raw else instance_config(rdf.get("config"), source)
        fast = cls(source, rdf, chosen, weights, pre, post, rules, package_halo, border, instances, seed_threshold)
        key = f"mmv_zoo:{chosen}"  # this module's own run of the package, beside core's verdicts
        if key not in verdicts:
            verdicts = {**read_record("verified", digest), key: fast._self_test(files, inp, out)}
            write_record("verified", digest, verdicts)
        return fast if verdicts[key] == "passed" else None

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        y, names = self.outputs(x)
        if self.instances is None:
            return y, names
        from ..frameworks.embedseg.cluster import settings_labels
        from ..frameworks.embedseg.embedding import axes_spacing

        return settings_labels(y, self.instances, axes_spacing(self.scales), self.seed_threshold), ["labels"]

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """(C, [Z], Y, X) raw input -> (K, [Z], Y, X) after the package's postprocessing: preprocessing
        on the whole image, the network on tiles cropped by the halo, postprocessing on the result."""
        pre = x.astype(np.float32, copy=False)
        for op in self.pre:
            pre = op(pre)
        pre = np.ascontiguousarray(pre, dtype=np.float32)
        plan = plan_tiles(pre.shape[1:], self.rules, self.halo, DEFAULT_BUDGET[self.spatial_dims], border=self.border)
        y = predict_tiled(self._run, pre, plan, batch_size=1)
        for op in self.post:
            y = op(y)
        return np.asarray(y, np.float32), self.channel_names

    def output_names(self) -> list[str]:
        return self.channel_names if self.instances is None else ["labels"]

    def _self_test(self, files: PackageFiles, inp: dict[str, Any], out: dict[str, Any]) -> str:
        """`passed` when this module reproduces the package's test output from its test input (one
        whole tile, no border padding: as the test tensors were made), else what differs."""
        arrays = []
        for tensor in (inp, out):
            source = (tensor.get("test_tensor") or {}).get("source")
            raw = files.read(source) if isinstance(source, str) else None
            if raw is None:
                return "no test tensors"
            arrays.append(np.load(io.BytesIO(raw), allow_pickle=False)[0].astype(np.float32))
        border, self.border = self.border, "image"
        try:
            got, _ = self.outputs(arrays[0])
        except Exception as e:  # noqa: BLE001 - any failure means: leave this package to bioimageio.core
            return f"failed: {type(e).__name__}: {str(e)[:200]}"
        finally:
            self.border = border
        if got.shape != arrays[1].shape:
            return f"output shape {got.shape} differs from the test output's {arrays[1].shape}"
        diff = float(np.abs(got - arrays[1]).max()) if got.size else 0.0
        scale = max(1.0, float(np.abs(arrays[1]).max()) if got.size else 1.0)
        return "passed" if diff <= 1e-3 * scale else f"max |difference| {diff:.3g} from the test output"


def _candidates(rdf: dict[str, Any], wanted: str | None) -> list[str]:
    """Weight formats this module runs that the package has, best first: ONNX where onnxruntime is
    installed and would not leave a GPU that torch sees idle, then TorchScript."""
    weights = rdf.get("weights")
    if not isinstance(weights, dict):
        return []
    present = [f for f in ("onnx", "torchscript") if isinstance(weights.get(f), dict)
               and isinstance(weights[f].get("source"), str)]
    if "onnx" in present and importlib.util.find_spec("onnxruntime") is None:
        present.remove("onnx")  # never test (and cache a failure for) weights this machine cannot run
    if wanted is not None:
        return [wanted] if wanted in present else []
    if "onnx" in present and not _onnx_first():
        present.remove("onnx")
        present.append("onnx")
    return present


def _onnx_first() -> bool:
    """onnxruntime is installed, and runs on a GPU or there is none (checked without importing torch)."""
    if importlib.util.find_spec("onnxruntime") is None:
        return False
    gpu = Path("/proc/driver/nvidia/version").exists() or (sys.platform == "darwin" and platform.machine() == "arm64")
    if not gpu:
        return True
    import onnxruntime

    return any(p in onnxruntime.get_available_providers() for p in ("CUDAExecutionProvider", "CoreMLExecutionProvider"))


def _verify(source: str | Path, formats: list[str], digest: str) -> dict[str, str]:
    """bioimageio.core's validation and test of `formats` (once per file; the verdicts are cached)."""
    from .package_predictor import load_package, test_formats

    return test_formats(load_package(source), formats, digest, stop_early=False)


def _torchscript_runner(weights: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    from .engine import pick_device

    device = pick_device()
    module = torch.jit.load(io.BytesIO(weights), map_location=device).eval()

    def run(tiles: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = module(torch.from_numpy(np.ascontiguousarray(tiles)).to(device))
        if isinstance(y, (tuple, list)):  # a package's first output (e.g. probabilities before class labels)
            y = y[0]
        return y.float().cpu().numpy()

    return run


def _onnx_runner(weights: bytes) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OMP_WAIT_POLICY=PASSIVE
    available = onnxruntime.get_available_providers()
    providers = [p for p in ("CUDAExecutionProvider", "CoreMLExecutionProvider") if p in available]
    session = onnxruntime.InferenceSession(weights, options, providers=[*providers, "CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(tiles: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: np.ascontiguousarray(tiles, np.float32)})[0], np.float32)

    return run


class PackageFiles:
    """The files of a package: a .zip, a folder, or an rdf.yaml with its files beside it, read without
    bioimageio.spec (`rdf()`: the rdf as plain YAML; `read(name)`: one member's bytes)."""

    def __init__(self, zip_path: Path | None, folder: Path | None, rdf_name: str) -> None:
        self.zip_path, self.folder, self.rdf_name = zip_path, folder, rdf_name

    @classmethod
    def of(cls, path: Path) -> PackageFiles | None:
        if path.is_file() and path.suffix.lower() == ".zip":
            try:
                with zipfile.ZipFile(path) as z:
                    names = z.namelist()
            except (OSError, zipfile.BadZipFile):
                return None
            rdf = next((n for n in PACKAGE_FILES if n in names), None) or next(
                (n for n in names if n.endswith(".bioimageio.yaml") and "/" not in n), None)
            return None if rdf is None else cls(path, None, rdf)
        if path.is_file():
            return cls(None, path.parent, path.name)
        if path.is_dir():
            rdf = next((n for n in PACKAGE_FILES if (path / n).is_file()), None)
            return None if rdf is None else cls(None, path, rdf)
        return None

    def read(self, name: str) -> bytes | None:
        if "://" in name or name.startswith("/") or ".." in Path(name).parts:
            return None
        try:
            if self.zip_path is not None:
                with zipfile.ZipFile(self.zip_path) as z:
                    return z.read(name)
            assert self.folder is not None
            return (self.folder / name).read_bytes()
        except (OSError, KeyError, zipfile.BadZipFile):
            return None

    def rdf(self) -> dict[str, Any] | None:
        import yaml

        text = self.read(self.rdf_name)
        try:
            data = yaml.safe_load(text) if text is not None else None
        except yaml.YAMLError:
            return None
        return data if isinstance(data, dict) else None


def _channel_axis(axes: list[dict[str, Any]]) -> dict[str, Any]:
    return next(a for a in axes if a.get("type") == "channel")


def _single_tensors(rdf: dict[str, Any] | None) -> bool:
    """One input, and a first output (the one mmv_zoo predicts with; a segmentation package's class
    labels follow it), each with axes (batch,) channel, then y, x or z, y, x."""
    if rdf is None or str(rdf.get("format_version", "")).split(".")[:2] != ["0", "5"]:
        return False
    inputs, outputs = rdf.get("inputs"), rdf.get("outputs")
    if not (isinstance(inputs, list) and len(inputs) == 1 and isinstance(outputs, list) and outputs):
        return False
    if not all(isinstance(t, dict) for t in (inputs[0], outputs[0])):
        return False
    for tensor in (inputs[0], outputs[0]):
        axes = tensor.get("axes")
        if not isinstance(axes, list) or not all(isinstance(a, dict) for a in axes):
            return False
        kinds = [a.get("type") for a in axes]
        if kinds[:1] != ["batch"]:  # the tiler feeds (B, C, *space) tiles
            return False
        kinds = kinds[1:]
        dtype = (tensor.get("data") or {}).get("type", "float32") if isinstance(tensor.get("data"), dict) else "float32"
        if dtype != "float32":  # the spec casts to a tensor's declared type: other types are left to core
            return False
        ids = [str(a.get("id")) for a in axes if a.get("type") == "space"]
        if kinds[:1] != ["channel"] or kinds[1:] != ["space"] * len(ids) or ids not in (["y", "x"], ["z", "y", "x"]):
            return False
        if not isinstance(_channel_axis(axes).get("channel_names"), list):
            return False
    return True


def _tiling(inp: dict[str, Any], out: dict[str, Any]) -> tuple[list[SizeRule], list[int]] | None:
    """Size rules and halo per space axis when every output space axis is its input axis's size."""
    ins = {str(a["id"]): a for a in inp["axes"] if a["type"] == "space"}
    outs = {str(a["id"]): a for a in out["axes"] if a["type"] == "space"}
    if list(ins) != list(outs):
        return None
    rules, halo = [], []
    for axis_id, a in ins.items():
        o = outs[axis_id]
        if float(o.get("scale", 1.0)) != float(a.get("scale", 1.0)):
            return None
        size, osize = a.get("size"), o.get("size")
        if isinstance(size, dict) and set(size) == {"min", "step"}:
            rules.append(SizeRule(min=int(size["min"]), step=int(size["step"])))
        elif isinstance(size, int):
            rules.append(SizeRule(min=size, step=0))
        else:
            return None
        same = (isinstance(osize, dict) and str(osize.get("tensor_id")) == str(inp.get("id"))
                and str(osize.get("axis_id")) == axis_id and not osize.get("offset"))
        if not (same or (isinstance(osize, int) and osize == size)):
            return None
        halo.append(int(o.get("halo") or 0))
    return rules, halo


def _operations(steps: list[Any], axes: list[dict[str, Any]]) -> list[Op] | None:
    """The spec's processing steps as numpy functions on (C, *space) arrays; None if one is not covered."""
    index = {"channel": 0, **{str(a["id"]): i + 1 for i, a in enumerate(x for x in axes if x["type"] == "space")}}
    ops, changed = [], False
    for step in steps:
        if not isinstance(step, dict):
            return None
        name = str(step.get("id"))
        if name in ("scale_range", "zero_mean_unit_variance") and changed:
            return None  # bioimageio.core takes sample statistics of the tensor before any step
        op = _operation(name, step.get("kwargs") or {}, index, len(index))
        if op is None:
            return None
        ops.append(op)
        changed = changed or name != "ensure_dtype"
    return ops


def _operation(name: str, kw: dict[str, Any], index: dict[str, int], ndim: int) -> Op | None:
    def reduced() -> tuple[int, ...] | None:  # per-sample statistics over these axes (never the batch)
        axes = kw.get("axes")
        if not isinstance(axes, list) or not axes or not all(str(a) in index for a in axes):
            return None
        return tuple(sorted(index[str(a)] for a in axes))

    def along(value: Any) -> Any:  # a number, or one value per channel along the channel axis
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, list) and kw.get("axis") == "channel":
            return np.asarray(value, np.float64).reshape((-1,) + (1,) * (ndim - 1))
        if isinstance(value, list) and len(value) == 1 and kw.get("axis") is None:
            return float(value[0])
        return None

    if name == "ensure_dtype" and isinstance(kw.get("dtype"), str):
        dtype = np.dtype(kw["dtype"])
        return lambda x: x.astype(dtype)
    if name == "scale_range":
        axes = reduced()
        if axes is None or kw.get("reference_tensor") is not None:
            return None
        lo, hi = float(kw.get("min_percentile", 0.0)), float(kw.get("max_percentile", 100.0))

        def scale_range(x: np.ndarray) -> np.ndarray:
            low, high = np.percentile(x, [lo, hi], axis=axes, keepdims=True)
            return (x - low) / (high - low + EPS)

        return scale_range
    if name == "zero_mean_unit_variance":
        axes = reduced()
        if axes is None:
            return None
        return lambda x: (x - x.mean(axis=axes, keepdims=True)) / (x.std(axis=axes, keepdims=True) + EPS)
    if name == "fixed_zero_mean_unit_variance":
        mean, std = along(kw.get("mean")), along(kw.get("std"))
        if mean is None or std is None:
            return None
        return lambda x: (x - mean) / (std + EPS)
    if name == "scale_linear":
        gain, offset = along(kw.get("gain", 1.0)), along(kw.get("offset", 0.0))
        if gain is None or offset is None:
            return None
        return lambda x: x * gain + offset
    if name == "clip":
        if kw.get("min_percentile") is not None or kw.get("max_percentile") is not None:
            return None
        lo, hi = kw.get("min"), kw.get("max")
        if not all(v is None or isinstance(v, (int, float)) for v in (lo, hi)) or (lo is None and hi is None):
            return None
        return lambda x: np.clip(x, lo, hi)
    if name == "sigmoid":
        return lambda x: 1.0 / (1.0 + np.exp(-x))
    if name == "softmax" and kw.get("axis", "channel") == "channel":
        def softmax(x: np.ndarray) -> np.ndarray:
            e = np.exp(x - x.max(axis=0, keepdims=True))
            return e / e.sum(axis=0, keepdims=True)

        return softmax
    if name == "binarize":
        threshold = along(kw.get("threshold"))
        return None if threshold is None else (lambda x: x > threshold)
    return None
