"""Export a trained run as a BioImage.IO 0.5 model package (.zip), tested before it is written.

The package is built in a temporary folder: weights (torchscript, pytorch_state_dict with a
standalone architecture file, optionally onnx), test tensors, sample tensors, a cover and a README.
Its description is validated by bioimageio.spec and run through `bioimageio.core.test_model` for
every weight format; only then is the zip written, under a temporary name renamed to `out`.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import OutputError, RunError
from . import ExportError
from .architecture import Architecture, architecture, environment_yaml, with_class_labels
from .axes import AxisSize, export_sizes, input_axes, output_axes
from .compat import rewrite_package
from .preprocessing import check_exportable, mask_postprocessing, mask_threshold, preprocessing_steps
from .readme import ReadmeFacts, render_readme
from .tensors import find_sample, load_crop, other_valid_shape, write_cover, write_sample_tiff

__all__ = ["DEFAULT_FORMATS", "EXPORT_KEYS", "ExportError", "ExportResult", "export_package"]

DEFAULT_FORMATS = ("torchscript", "pytorch_state_dict")
KNOWN_FORMATS = ("torchscript", "pytorch_state_dict", "onnx")
ONNX_OPSET = 17
TRACE_TOLERANCE = 1e-4
LABEL_AGREEMENT = 0.999
"""Share of test-input pixels on which a labels package's compiled clustering must equal mmv_zoo's."""
CLASS_LABELS_OUTPUT = "class labels (argmax of the probabilities; 0: background)"
LABELS_OUTPUT = "instance labels (0: background), uint16; the embeddings clustered inside the model"
LABELS_NOTE = ("The model clusters whole images into instance labels: predict each image in one piece (the "
               "output halo is the context to pad around it); its space axes are declared not concatenable "
               "(not to be predicted block by block), and a consumer that tiles it anyway clusters every tile "
               "on its own, so labels restart in each tile.")
LABELS_NORMALIZATION = ("The model takes raw images: it normalizes them itself ({kind}, per channel) with the "
                        "statistics of the image inside the padding a consumer adds, so every consumer, padding "
                        "or not, gives the network the inputs mmv-zoo predict gives it.")
MMV_IM2IM = {
    "text": "Sonneck J, Zhou Y, Chen J. MMV_Im2Im: an open source microscopy machine vision toolbox for "
            "image-to-image transformation. GigaScience (2024).",
    "doi": "10.1093/gigascience/giad120",
}
EXPORT_KEYS = ("export_notes", "run", "training_data", "exported_with", "package_output")
"""Keys the export adds to `config.mmv_zoo` next to the resolved settings (drop them to re-validate)."""

FILES = {
    "torchscript": "weights_torchscript.pt",
    "pytorch_state_dict": "weights_state_dict.pt",
    "onnx": "weights.onnx",
    "architecture": "architecture.py",
    "environment": "environment.yaml",
    "test_input": "test_input.npy",
    "test_output": "test_output.npy",
    "test_output_labels": "test_output_labels.npy",
    "sample_input": "sample_input.tif",
    "sample_output": "sample_output.tif",
    "cover": "cover.png",
    "readme": "README.md",
}


@dataclass
class ExportResult:
    zip_path: Path
    formats: tuple[str, ...]
    test_status: str
    """`passed` when bioimageio.core's test_model passed for every format (else nothing is written)."""
    test_results: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Approximations made by the export (also in the README and `config.mmv_zoo.export_notes`)."""


def export_package(
    source: str | Path,
    out: Path,
    sample: Path | None = None,
    formats: tuple[str, ...] | None = None,
    overwrite: bool = False,
    direction: str | None = None,
    embeddings: bool = False,
    class_labels: bool = True,
) -> ExportResult:
    """Export the run folder or checkpoint `source` to the BioImage.IO package `out` (.zip).

    `sample` is the image cut into the test tensors and cover (default: the run's first validation
    image). `direction` (a2b or b2a) exports one direction of a CycleGAN run (one package each; the
    package's input is that direction's). An instance (EmbedSeg) run's package outputs uint16 labels,
    clustered inside its TorchScript weights (the only format that can hold the clustering loop);
    `embeddings=True` exports the raw embeddings instead, in any format. A segmentation package has a
    second output, the class labels (argmax), unless `class_labels=False` (one output, the
    probabilities, as QuPath needs). `formats` defaults to
    `DEFAULT_FORMATS` (torchscript alone for a labels package). Raises ExportError (a RunError) and
    leaves nothing at `out` when anything fails; an existing `out` is only replaced with `overwrite`.
    """
    from ..io.write import check_writable

    requested = formats
    formats = _check_formats(formats if formats is not None else DEFAULT_FORMATS)
    out = Path(out)
    if out.suffix.lower() != ".zip":
        raise ExportError(f"{out}: a BioImage.IO package is a .zip file")
    if out.exists() and not overwrite:
        raise ExportError(f"{out}: exists already (pass --overwrite to replace it)")
    check_writable(out.parent)
    try:
        from ..predict.sources import resolve_source
        from ..remote.pretrained import entry_package
        from ..run import RunFolder, load_im2im_checkpoint, load_model, load_package_weights

        src = resolve_source(source)
        shipped_info: dict[str, Any] | None = None
        pre = src.entry.mmv.pretrained if src.kind == "entry" and src.entry is not None else None
        if pre is not None and sample is None:
            what = "an MMV_Im2Im checkpoint" if pre.format == "mmv_im2im_checkpoint" else "a package"
            raise ExportError(f"{source}: its weights are {what}, which records no validation image; pass a "
                              "sample image (--sample) for the test tensors")
        if im2im_entry(src):  # the paper's weights converted: the entry's network, an MMV_Im2Im checkpoint
            model = load_im2im_checkpoint(src.entry, entry_package(src.entry).path)
        elif pre is not None and pre.format == "bioimageio":  # re-exported, e.g. as labels or in other formats
            model, shipped_info = load_package_weights(src.entry, entry_package(src.entry).path)
        elif src.kind not in ("run", "checkpoint"):
            what = "a BioImage.IO package" if src.kind == "package" else "a zoo entry without weights"
            raise ExportError(f"{source}: is {what}; export takes a trained run folder or checkpoint (.ckpt), "
                              "or a zoo entry with weights (an MMV_Im2Im checkpoint or an mmv_zoo package with "
                              "pytorch_state_dict weights)")
        else:
            model = load_model(source, direction=direction)
    except ExportError:
        raise
    except RunError as e:
        raise ExportError(str(e)) from None
    entry = model.entry
    check_exportable(entry.mmv.data.normalization.source)  # before any work: no package for macenko
    labels = entry.mmv.task == "instance" and not embeddings
    if embeddings and entry.mmv.task != "instance":
        raise ExportError(f"{source}: --embeddings is for instance (EmbedSeg) entries; this one's task is "
                          f"{entry.mmv.task}")
    if labels:
        formats = label_formats(requested)
    run = RunFolder.of(source) if src.kind in ("run", "checkpoint") else None
    info = run.read_info() if run is not None else shipped_info
    sizes = export_sizes(entry, model.inference_model())
    sample_path = Path(sample) if sample is not None else find_sample(entry, info)
    raw = load_crop(sample_path, entry, sizes)
    with tempfile.TemporaryDirectory(prefix="mmv_zoo_export_") as tmp:
        builder = _Builder(Path(tmp), model, entry, info or {}, sizes, formats, labels,
                           class_labels and entry.mmv.task == "segmentation")
        descr = builder.build(raw, sample_path.name)
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputError(f"{out.parent}: cannot create output folder ({e.strerror or e})") from None
        _write_zip(descr, out)
    return ExportResult(out, formats, "passed", builder.facts.test_results, builder.notes)


# ---------------------------------------------------------------- helpers


def im2im_entry(src: Any) -> bool:
    """A resolved source that is a zoo entry whose pretrained weights are an MMV_Im2Im checkpoint."""
    pre = src.entry.mmv.pretrained if src.kind == "entry" else None
    return pre is not None and pre.format == "mmv_im2im_checkpoint"


def label_formats(requested: tuple[str, ...] | None) -> tuple[str, ...]:
    """The weight formats of a package whose output is instance labels: TorchScript only."""
    if requested is None:
        return ("torchscript",)
    other = [f for f in _check_formats(requested) if f != "torchscript"]
    if other:
        raise ExportError(f"formats {list(requested)}: an instance package that outputs labels has torchscript "
                          f"weights only ({', '.join(other)} cannot hold the clustering loop); pass --embeddings "
                          "for a package of the raw embeddings in any format")
    return ("torchscript",)


def _check_formats(formats: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(f.strip() for f in formats if f.strip()))
    bad = [f for f in chosen if f not in KNOWN_FORMATS]
    if bad or not chosen:
        raise ExportError(f"formats {list(formats)}: choose one or more of {list(KNOWN_FORMATS)}")
    if "onnx" in chosen:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ExportError("formats: onnx needs onnx and onnxruntime (pip install 'mmv_zoo[onnx]')") from None
    return chosen


def _write_zip(descr: Any, out: Path) -> None:
    """Save the package under a temporary name next to `out`, load it back, then rename it to `out`."""
    from bioimageio.spec import load_description, save_bioimageio_package
    from bioimageio.spec.model import v0_5

    partial = out.with_name(f".{out.stem}.partial-{os.getpid()}.zip")
    try:
        save_bioimageio_package(descr, output_path=partial)
        rewrite_package(partial)  # readable by bioimageio.core 0.9.6 too (export/compat.py)
        back = load_description(partial, perform_io_checks=True)
        if not isinstance(back, v0_5.ModelDescr):
            raise ExportError(f"{out}: the written package does not load back: {_summary_errors(back)}")
        os.replace(partial, out)
    except ExportError:
        raise
    except Exception as e:
        raise ExportError(f"{out}: cannot write the package ({type(e).__name__}: {str(e)[:300]})") from None
    finally:
        partial.unlink(missing_ok=True)


def _summary_errors(obj: Any, limit: int = 5) -> str:
    summary = getattr(obj, "validation_summary", obj)
    msgs = []
    for d in getattr(summary, "details", []):
        for e in d.errors:
            loc = ".".join(map(str, e.loc))
            msgs.append(f"{d.name}: {loc + ': ' if loc else ''}{e.msg}".strip()[:400])
    return "; ".join(msgs[:limit]) or str(getattr(summary, "status", "unknown status"))


class _Builder:
    """Writes the package files into `folder` and describes them; one export per instance."""

    def __init__(self, folder: Path, model: Any, entry: Any, info: dict[str, Any], sizes: list[AxisSize],
                 formats: tuple[str, ...], labels: bool = False, class_labels: bool = False) -> None:
        import torch

        from ..frameworks.fcn import WithClassLabels

        self.folder, self.model, self.entry, self.info = folder, model, entry, info
        self.sizes, self.formats, self.labels, self.class_labels = sizes, formats, labels, class_labels
        self.net = model.inference_model().eval().cpu()
        self.exported = WithClassLabels(self.net).eval() if class_labels else self.net
        """What the torchscript and onnx weights run: the network, with the class labels as a second output."""
        self.class_dtype = "uint8" if entry.out_channels <= 256 else "uint16"
        self.torch_version = torch.__version__.split("+")[0]
        self.space_ids = [s.id for s in sizes]
        self.pre, self.notes = preprocessing_steps(entry.mmv.data.normalization.source, self.space_ids)
        if labels:  # the model normalizes its input itself, with the statistics of the image inside any padding
            self.pre = self.pre[:1]
            self.notes = [LABELS_NORMALIZATION.format(kind=entry.mmv.data.normalization.source.kind)]
        self.input_axes = input_axes(entry, sizes, self.notes, concatenable=not labels)
        self.mask_threshold = mask_threshold(entry)  # a mask domain: the package outputs 0/1, not raw values
        if self.mask_threshold is not None:
            self.notes.append(f"the output is a mask: the generated values are binarized at "
                              f"{self.mask_threshold:g} (BioImage.IO binarize), giving 0/1 as uint8")
        if labels:
            self.notes.append(LABELS_NOTE)
        for s in sizes:
            if s.halo < s.field:
                self.notes.append(f"axis {s.id}: the halo {s.halo} is smaller than the receptive-field radius "
                                  f"{s.field} (capped); tiled predictions differ slightly from whole-image ones")
        self.cite = self._cite(self.notes)
        self.arch: Architecture | None = None
        self.facts: ReadmeFacts

    def path(self, key: str) -> Path:
        return self.folder / FILES[key]

    def build(self, raw: np.ndarray, sample_name: str) -> Any:
        """Write every file, test the package and return its final description."""
        from bioimageio.core import __version__ as core_version

        x = raw[None]
        np.save(self.path("test_input"), x)
        self._torchscript(x)
        if "pytorch_state_dict" in self.formats:
            self._state_dict(x)
        if "onnx" in self.formats:
            self._onnx(x)
        y, shown = self._test_output()
        self._check_not_empty(sample_name)
        write_sample_tiff(self.path("sample_input"), x)
        write_sample_tiff(self.path("sample_output"), shown)
        write_cover(self.path("cover"), raw, shown[0], self.entry.mmv.task == "segmentation",
                    mask=self.mask_threshold is not None, labels=self.labels)
        self.facts = ReadmeFacts(
            formats=list(self.formats), pytorch_version=self.torch_version, sample_name=sample_name,
            test_shape=tuple(x.shape), preprocessing=[_describe_step(p) for p in self.pre], notes=self.notes,
            requirements=self.arch.requirements if self.arch else [], arch_how=self.arch.how if self.arch else "",
            run=self.info, labels=self.labels, class_labels=self.class_labels,
            bioimageio_core=core_version, opset=ONNX_OPSET, arch_file=FILES["architecture"])
        self.path("readme").write_text(render_readme(self.entry, self.sizes, self.facts))
        descr = self.describe(self.formats, with_samples=True)
        self.facts.test_results = self._test(descr)
        self.path("readme").write_text(render_readme(self.entry, self.sizes, self.facts))
        return self.describe(self.formats, with_samples=True)

    # ------------------------------------------------------------ weights

    def _torchscript(self, x: np.ndarray) -> None:
        """Trace the inference model; check it on a second, differently sized input."""
        import torch

        example = torch.from_numpy(_roughly_normalized(x))
        if self.labels:
            return self._label_torchscript(example, torch.from_numpy(np.ascontiguousarray(x, np.float32)))
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                traced = torch.jit.trace(self.exported, example, check_trace=False)
            except Exception as e:
                raise ExportError(f"torchscript: tracing the network failed ({type(e).__name__}: {e})") from None
            other = torch.randn(1, x.shape[1], *other_valid_shape(x.shape[2:], self.sizes),
                                generator=torch.Generator().manual_seed(0))
            diff = _max_diff(traced(other), self.exported(other))
        if not diff <= TRACE_TOLERANCE:
            raise ExportError(
                f"torchscript: the traced model differs from the network by {diff:.3g} on input shape "
                f"{tuple(other.shape)} (the network's forward depends on the input size in a way tracing cannot keep)"
            )
        traced.save(str(self.path("torchscript")))

    def _label_torchscript(self, example: Any, raw: Any) -> None:
        """The network traced on `example` and the normalization and clustering compiled around it
        (`LabelModel`); checked on the `raw` test input against mmv_zoo's normalization, network and
        clustering (`mmv-zoo predict`'s)."""
        import torch

        from ..frameworks.embedseg.cluster import image_region, label_module, settings_labels
        from ..frameworks.embedseg.embedding import entry_spacing
        from ..transforms.normalize import normalizer
        from ..transforms.torch_normalize import norm_arguments

        settings, spacing = self.entry.mmv.embedseg, entry_spacing(self.entry)
        norm = self.entry.mmv.data.normalization.source
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                module = label_module(self.net, settings, spacing, [s.halo for s in self.sizes], example,
                                      norm=norm_arguments(norm))
            except Exception as e:
                raise ExportError(f"torchscript: compiling the network with the clustering failed "
                                  f"({type(e).__name__}: {str(e)[:300]})") from None
            inner = tuple(slice(a, b) for a, b in image_region(raw[0], [s.halo for s in self.sizes]))
            got = module(raw).numpy()[0, 0][inner]
            image = raw[0].numpy()
            normalized = normalizer(image[(slice(None), *inner)], norm)(image)  # the image's statistics
            embeddings = self.net(torch.from_numpy(np.ascontiguousarray(normalized, np.float32))[None]).numpy()[0]
            want = settings_labels(embeddings[(slice(None), *inner)], settings, spacing)[0]
        agree = float((got == want).mean())
        if agree < LABEL_AGREEMENT:
            raise ExportError(f"torchscript: the compiled labels agree with the clustered embeddings on only "
                              f"{agree:.2%} of the pixels of the test input")
        module.save(str(self.path("torchscript")))

    def _state_dict(self, x: np.ndarray) -> None:
        """State dict + standalone architecture; check it loads strictly and reproduces the network."""
        import importlib.util

        import torch

        self.arch = architecture(self.entry, self.net)
        if self.class_labels:
            self.arch = with_class_labels(self.arch)
        if self.arch.note:
            self.notes.append(self.arch.note)
        self.path("architecture").write_text(self.arch.text)
        if self.arch.requirements:
            self.path("environment").write_text(environment_yaml(self.arch.requirements, self.torch_version))
        state = {k: v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        torch.save(state, self.path("pytorch_state_dict"))
        spec = importlib.util.spec_from_file_location("mmv_zoo_exported_architecture", self.path("architecture"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            rebuilt = getattr(module, self.arch.callable)(**self.arch.kwargs).eval()
            rebuilt.load_state_dict(torch.load(self.path("pytorch_state_dict"), weights_only=True), strict=True)
        except Exception as e:
            raise ExportError(f"pytorch_state_dict: the standalone architecture does not rebuild the network "
                              f"({type(e).__name__}: {str(e)[:300]})") from None
        example = torch.from_numpy(_roughly_normalized(x))
        other = torch.randn(1, x.shape[1], *other_valid_shape(x.shape[2:], self.sizes),
                            generator=torch.Generator().manual_seed(0))
        for inp in (example, other):
            with torch.no_grad():
                diff = _max_diff(rebuilt(inp), self.exported(inp))
            if not diff <= TRACE_TOLERANCE:
                raise ExportError(f"pytorch_state_dict: the rebuilt network differs from the trained one by "
                                  f"{diff:.3g} on input shape {tuple(inp.shape)}")

    def _onnx(self, x: np.ndarray) -> None:
        import torch

        inp, outp = self.entry.inputs[0].id, self.entry.outputs[0].id
        outs = [outp, "labels"] if self.class_labels else [outp]
        dynamic = {0: "batch", **{i + 2: a for i, a in enumerate(self.space_ids)}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(self.exported, (torch.from_numpy(_roughly_normalized(x)),), str(self.path("onnx")),
                                  dynamo=False, opset_version=ONNX_OPSET, input_names=[inp], output_names=outs,
                                  dynamic_axes={name: dynamic for name in (inp, *outs)})
            except Exception as e:
                raise ExportError(f"onnx: export failed ({type(e).__name__}: {str(e)[:300]})") from None

    # ------------------------------------------------------------ test tensors and tests

    def _test_output(self) -> tuple[np.ndarray, np.ndarray]:
        """The exported torchscript module applied to the BioImage.IO-preprocessed test input, and the
        output to show (the same, but for a labels package: predicted with the halo padded around)."""
        import torch
        from bioimageio.core import create_prediction_pipeline
        from bioimageio.core.digest_spec import get_test_input_sample

        x = np.load(self.path("test_input"))
        draft_dtype = np.uint8 if self.mask_threshold is not None else np.uint16 if self.labels else np.float32
        channels = 1 if self.labels else self.entry.out_channels
        np.save(self.path("test_output"), np.ones((1, channels, *x.shape[2:]), draft_dtype))
        if self.class_labels:
            np.save(self.path("test_output_labels"), np.ones((1, 1, *x.shape[2:]), self.class_dtype))
        draft = self.describe(("torchscript",), with_samples=False)
        sample = get_test_input_sample(draft)
        create_prediction_pipeline(bioimageio_model=draft, weight_format="torchscript").apply_preprocessing(sample)
        axes = [a.id for a in draft.inputs[0].axes]
        pre = np.ascontiguousarray(sample.members[draft.inputs[0].id].transpose(axes).data.values, np.float32)
        module = torch.jit.load(str(self.path("torchscript")), map_location="cpu").eval()
        with torch.no_grad():
            y = module(torch.from_numpy(pre))
        if self.class_labels:  # (probabilities, class labels): uint8 class labels (ensure_dtype)
            y, classes = y
            np.save(self.path("test_output_labels"), classes.numpy().astype(self.class_dtype))
        y = y.numpy().astype(np.float32)
        if self.mask_threshold is not None:  # what binarize + ensure_dtype make of it
            y = (y > self.mask_threshold).astype(np.uint8)
        shown = y
        if self.labels:  # int32 labels, at most UINT16_LABELS (the module refuses more): ensure_dtype uint16
            y = y.astype(np.uint16)
            # test tensors are the bare model's output on the crop as it is (clustered to its edge); the
            # sample and cover show what a consumer gets: the input padded by the halo, the output cropped
            halo = [s.halo for s in self.sizes]
            padded = np.pad(pre, [(0, 0), (0, 0), *((h, h) for h in halo)], mode="symmetric")
            with torch.no_grad():
                full = module(torch.from_numpy(np.ascontiguousarray(padded))).numpy()
            shown = full[(Ellipsis, *(slice(h, h + n) for h, n in zip(halo, pre.shape[2:], strict=True)))]
            shown = shown.astype(np.uint16)
        np.save(self.path("test_output"), y)
        return y, shown

    def _check_not_empty(self, sample_name: str) -> None:
        """ExportError when a labels output of the test crop is all 0, which BioImage.IO refuses as a
        test tensor ("too small for reliable testing"), saying what to do instead."""
        if self.labels and not np.load(self.path("test_output")).any():
            raise ExportError(f"{sample_name}: the model finds no instance in the test crop of this sample image, "
                              "and BioImage.IO refuses an all-zero test output; pass a sample with objects "
                              "(--sample) or export the raw embeddings (--embeddings)")
        if self.class_labels and not np.load(self.path("test_output_labels")).any():
            raise ExportError(f"{sample_name}: the model finds only background in the test crop of this sample "
                              "image, and BioImage.IO refuses an all-zero test output for the class labels; pass a "
                              "sample with foreground (--sample) or export without them (--no-class-labels)")

    def _test(self, descr: Any) -> dict[str, str]:
        """bioimageio.core's test_model per weight format; ExportError with the first failures."""
        from bioimageio.core import test_model

        results, failures = {}, []
        for fmt in self.formats:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                summary = test_model(descr, weight_format=fmt)
            results[fmt] = str(summary.status)
            if summary.status != "passed":
                failures.append(f"[{fmt}] {_summary_errors(summary)}")
        if failures:
            raise ExportError("the package failed bioimageio.core's test_model: " + " | ".join(failures))
        return results

    # ------------------------------------------------------------ description

    def describe(self, formats: tuple[str, ...], with_samples: bool) -> Any:
        """The v0_5.ModelDescr of the files in the folder (ExportError listing the invalid fields)."""
        from bioimageio.spec.model import v0_5
        from pydantic import ValidationError

        entry = self.entry
        inp, outp = entry.inputs[0], entry.outputs[0]
        extra = with_samples and self.path("sample_input").exists()
        try:
            inputs = [v0_5.InputTensorDescr(
                id=v0_5.TensorId(inp.id), description=inp.description, axes=self.input_axes,
                test_tensor=v0_5.FileDescr(source=self.path("test_input")),
                sample_tensor=v0_5.FileDescr(source=self.path("sample_input")) if extra else None,
                data=v0_5.IntervalOrRatioDataDescr(type="float32"), preprocessing=self.pre)]
            seg = entry.mmv.task == "segmentation"
            mask = self.mask_threshold is not None
            data = (v0_5.NominalOrOrdinalDataDescr(values=[0, 1], type="uint8") if mask else
                    v0_5.IntervalOrRatioDataDescr(type="uint16") if self.labels else
                    v0_5.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0) if seg else (None, None)))
            post = (mask_postprocessing(self.mask_threshold) if mask else
                    [v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype="uint16"))] if self.labels else [])
            outputs = [v0_5.OutputTensorDescr(
                id=v0_5.TensorId("labels" if self.labels else outp.id),
                description=LABELS_OUTPUT if self.labels else outp.description,
                axes=output_axes(entry, self.sizes, labels=self.labels),
                test_tensor=v0_5.FileDescr(source=self.path("test_output")),
                sample_tensor=v0_5.FileDescr(source=self.path("sample_output")) if extra else None,
                data=data, postprocessing=post)]
            if self.class_labels:
                outputs.append(v0_5.OutputTensorDescr(
                    id=v0_5.TensorId("labels"), description=CLASS_LABELS_OUTPUT,
                    axes=output_axes(entry, self.sizes, labels=True),
                    test_tensor=v0_5.FileDescr(source=self.path("test_output_labels")),
                    data=v0_5.NominalOrOrdinalDataDescr(values=list(range(entry.out_channels)), type=self.class_dtype),
                    postprocessing=[v0_5.EnsureDtypeDescr(kwargs=v0_5.EnsureDtypeKwargs(dtype=self.class_dtype))]))
            description = entry.description.strip() + (f" {LABELS_NOTE}" if self.labels else "")
            return v0_5.ModelDescr(
                name=entry.name, description=description, authors=self._authors(),
                cite=self.cite, license=entry.license,
                tags=list(dict.fromkeys([*entry.tags, "mmv_zoo"])),
                documentation=(v0_5.FileDescr(source=self.path("readme")) if self.path("readme").exists() else None),
                covers=[v0_5.FileDescr(source=self.path("cover"))] if self.path("cover").exists() else [],
                version=entry.version, git_repo=entry.git_repo,
                training_data=self._linked_dataset(),
                inputs=inputs, outputs=outputs, weights=self._weights(formats), config=self._config())
        except ValidationError as e:
            msgs = [f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:5]]
            raise ExportError("the package description is not valid BioImage.IO 0.5: " + "; ".join(msgs)) from None

    def _weights(self, formats: tuple[str, ...]) -> Any:
        from bioimageio.spec.model import v0_5

        root = "pytorch_state_dict" if "pytorch_state_dict" in formats else "torchscript"
        if root not in formats:
            root = formats[0]
        parent = {f: (None if f == root else root) for f in formats}
        w: dict[str, Any] = {}
        if "pytorch_state_dict" in formats and self.arch is not None:
            deps = (v0_5.FileDescr(source=self.path("environment"))
                    if self.arch.requirements else None)
            w["pytorch_state_dict"] = v0_5.PytorchStateDictWeightsDescr(
                source=self.path("pytorch_state_dict"), pytorch_version=self.torch_version,
                architecture=v0_5.ArchitectureFromFileDescr(
                    source=self.path("architecture"), callable=self.arch.callable, kwargs=self.arch.kwargs),
                dependencies=deps, strict=True)
        if "torchscript" in formats:
            w["torchscript"] = v0_5.TorchscriptWeightsDescr(
                source=self.path("torchscript"), pytorch_version=self.torch_version, parent=parent["torchscript"])
        if "onnx" in formats:
            w["onnx"] = v0_5.OnnxWeightsDescr(source=self.path("onnx"), opset_version=ONNX_OPSET,
                                              parent=parent["onnx"])
        return v0_5.WeightsDescr(**w)

    def _authors(self) -> list[dict[str, Any]]:
        return [a.model_dump(exclude_none=True) for a in self.entry.authors]

    def _cite(self, notes: list[str]) -> list[dict[str, Any]]:
        cites = []
        for c in self.entry.cite:
            if c.doi is None and c.url is None:
                notes.append(f"citation {c.text[:60]!r} left out of rdf.yaml cite (it has no doi or url)")
                continue
            cites.append(c.model_dump(exclude_none=True))
        if not any(c.get("doi") == MMV_IM2IM["doi"] for c in cites):
            cites.append(dict(MMV_IM2IM))
        return cites

    def _linked_dataset(self) -> dict[str, Any] | None:
        data = self.entry.training_data or {}
        return {"id": data["id"], **({"version": data["version"]} if "version" in data else {})} \
            if isinstance(data.get("id"), str) else None

    def _config(self) -> dict[str, Any]:
        from importlib.metadata import PackageNotFoundError, version

        mmv = self.entry.mmv
        t = mmv.training
        run = {k: self.info[k] for k in ("entry", "epochs", "steps", "seconds", "monitor", "best_score",
                                         "train_files", "val_files", "versions") if k in self.info}
        own: dict[str, Any] = mmv.model_dump(mode="json")
        try:
            exported_with = f"mmv_zoo {version('mmv_zoo')}"
        except PackageNotFoundError:
            exported_with = "mmv_zoo"
        own.update(export_notes=list(self.notes), run=run, exported_with=exported_with)
        if mmv.task == "instance":
            own["package_output"] = "labels" if self.labels else "embeddings"
        if self.entry.training_data and self._linked_dataset() is None:
            own["training_data"] = self.entry.training_data
        training = {"training_epochs": self.info.get("epochs", t.max_epochs), "training_batch_size": t.batch_size,
                    "initial_learning_rate": t.optimizer.lr, "loss_function": mmv.loss.kind,
                    "optimizer": t.optimizer.kind, "learning_rate_schedule": t.scheduler.kind}
        return {"mmv_zoo": own, "bioimageio": {"training": training}}


def _max_diff(a: Any, b: Any) -> float:
    """Largest absolute difference of two outputs (tensors, or tuples of them, compared as floats)."""
    pairs = zip(a, b, strict=True) if isinstance(a, (tuple, list)) else [(a, b)]
    return max(float((p.float() - q.float()).abs().max()) for p, q in pairs)


def _roughly_normalized(x: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance float32: a representative network input for tracing and checks."""
    return ((x - x.mean()) / (x.std() + 1e-6)).astype(np.float32)


def _describe_step(step: Any) -> str:
    kwargs = step.kwargs.model_dump(mode="json", exclude_none=True) if step.kwargs is not None else {}
    return f"`{step.id}` {json.dumps(kwargs)}"
