"""The README.md shipped as the package's documentation."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..entry import Entry
    from .axes import AxisSize

FORMAT_NOTES = {
    "torchscript": "TorchScript (traced on CPU); needs only PyTorch.",
    "onnx": "ONNX (opset {opset}, dynamic batch and space axes); runs with onnxruntime.",
    "pytorch_state_dict": "PyTorch state dict with the architecture file `{arch}` ({how}).",
}


@dataclass
class ReadmeFacts:
    """What the README reports beyond the entry itself."""

    formats: list[str]
    pytorch_version: str
    sample_name: str
    test_shape: tuple[int, ...]
    preprocessing: list[str]
    notes: list[str] = field(default_factory=list)
    requirements: list[str] = field(default_factory=list)
    run: dict[str, Any] = field(default_factory=dict)
    test_results: dict[str, str] = field(default_factory=dict)
    bioimageio_core: str = ""
    opset: int = 17
    arch_file: str = "architecture.py"
    class_labels: bool = False
    """A segmentation package's second output, the class labels (argmax)."""
    labels: bool = False
    """The output is instance labels clustered inside the TorchScript weights (not the embeddings)."""
    arch_how: str = ""
    """How the architecture file was made (e.g. generated from a torch.fx trace; needs only PyTorch)."""


def render_readme(entry: Entry, sizes: list[AxisSize], facts: ReadmeFacts) -> str:
    mmv = entry.mmv
    inp, outp = entry.inputs[0], entry.outputs[0]
    lines = [f"# {entry.name}", "", entry.description.strip(), ""]
    lines += ["## Model", "",
              f"- Task: {mmv.task} ({mmv.framework} framework of mmv_zoo), network `{mmv.network.kind}` "
              f"({entry.spatial_dims}D).",
              f"- Input `{inp.id}`: channels {inp.channel_names}; axes b, c, {', '.join(s.id for s in sizes)}.",
              (f"- Output `labels`: uint16 instance labels (0: background). The network's embeddings "
               f"({', '.join(outp.channel_names)}) are clustered inside the TorchScript weights with the settings "
               "in `config.mmv_zoo.embedseg`." if facts.labels else
               f"- Output `{outp.id}`: channels {outp.channel_names}"
               + (" (class probabilities, softmax inside the model)." if mmv.task == "segmentation" else ".")
               + (" Output `labels`: the class labels (argmax of the probabilities), uint8; viewers that run one "
                  "output take the first, the probabilities." if facts.class_labels else "")),
              "- Valid input sizes per space axis: "
              + ", ".join(f"{s.id}: {s.min} + k*{s.step}" if s.step else f"{s.id}: {s.min}" for s in sizes) + ".",
              ("- Predict whole images, padded by the output halo ("
               + ", ".join(f"{s.id}: {s.halo}" for s in sizes) + " pixels per side): labels cannot be stitched "
               "from tiles (each tile is clustered on its own, so its labels restart at 1)." if facts.labels else
               "- Output halo for tiled prediction: "
               + ", ".join(f"{s.id}: {s.halo}" for s in sizes) + " pixels per side (measured receptive-field "
               "radius: " + ", ".join(f"{s.id}: {s.field}" for s in sizes) + "; tiles cropped by a halo that "
               "covers it reproduce a whole-image prediction)."),
              ""]
    lines += ["## Preprocessing", "", *[f"1. {p}" for p in facts.preprocessing], ""]
    if facts.notes:
        lines += ["Notes:", "", *[f"- {n}" for n in facts.notes], ""]
    lines += ["## Weights", ""]
    for f in facts.formats:
        lines.append(f"- `{f}`: " + FORMAT_NOTES[f].format(opset=facts.opset, arch=facts.arch_file,
                                                              how=facts.arch_how or "see its docstring"))
    lines.append(f"- Saved with PyTorch {facts.pytorch_version}.")
    if "pytorch_state_dict" in facts.formats and facts.requirements:
        lines.append(f"- The state-dict architecture imports {', '.join(facts.requirements)} (declared in "
                     "`environment.yaml`); consumers without it can use the torchscript or onnx weights.")
    lines.append("")
    lines += _training(entry, facts.run)
    lines += ["# Validation", "",
              "Before this package was written, mmv_zoo validated its rdf.yaml with bioimageio.spec and ran "
              f"`bioimageio.core.test_model` (bioimageio.core {facts.bioimageio_core}) for every weight format: "
              "the test input is run through the preprocessing above and the model, and the result must match "
              "the test output; inference is also checked at several valid input sizes and batch sizes.", "",
              f"- Test input: central crop {facts.test_shape} (b, c, space) of `{facts.sample_name}`, raw values "
              "as float32.",
              "- Test output: the exported TorchScript module applied to the preprocessed test input.",
              "- The TorchScript trace was checked against the eager model on a second input size (max abs "
              "difference below 1e-4).", ""]
    if facts.test_results:
        lines += ["| weight format | bioimageio.core test_model |", "| --- | --- |"]
        lines += [f"| {f} | {s} |" for f, s in facts.test_results.items()]
        lines.append("")
    lines += ["## Citation", "", *[f"- {c.text}" + (f" doi:{c.doi}" if c.doi else "") for c in entry.cite], ""]
    lines += [f"License: {entry.license}. Exported with mmv_zoo; the resolved mmv_zoo settings are in "
              "rdf.yaml under `config.mmv_zoo`.", ""]
    return "\n".join(lines)


def _training(entry: Entry, run: dict[str, Any]) -> list[str]:
    t = entry.mmv.training
    lines = ["## Training", "",
             f"- Entry `{run.get('entry', entry.slug)}`; loss `{entry.mmv.loss.kind}`, optimizer "
             f"`{t.optimizer.kind}` (lr {t.optimizer.lr}), batch size {t.batch_size}, patch {entry.mmv.data.patch}."]
    if entry.training_data and entry.training_data.get("description"):
        lines.append(f"- Training data: {entry.training_data['description']}")
    if run:
        lines.append(f"- Run: {run.get('epochs', '?')} epochs, {run.get('steps', '?')} steps, "
                     f"{run.get('seconds', '?')} s; {len(run.get('train_files', []))} training and "
                     f"{len(run.get('val_files', []))} validation images.")
        if run.get("best_score") is not None:
            lines.append(f"- Best validation score: {run.get('monitor', 'score')} = {run['best_score']:.4g}.")
    lines.append("")
    return lines
