"""`mmv-zoo plan DATA --task ... --out my_zoo/NAME`: an entry derived from the user's data.

The method comes from a template entry (`--from`, else the zoo's entry for the task, dimensionality
and colour of the data: `TEMPLATES`); what depends on the data is derived from its fingerprint
(`catalog.fingerprint`) and the device, and every derived value is written with a YAML comment
naming the fact that chose it:

- network depth: the levels a patch can be halved through while the bottom keeps >= 16 pixels in
  plane; 3D: z is halved at a level only once its spacing is at most twice the in-plane one there
  (nnU-Net's rule; fnet, which halves all axes or none: `anisotropic_z`; level networks: z stride 1);
- patch: the median image size (up to 256 px in 2D, 128 in plane and 32 in z in 3D), at least four
  object diameters for instances, a multiple of the network's step;
- batch: what the device's memory holds (`predict.memory`: the activation bytes per voxel measured
  on one small forward pass, times `TRAINING_FACTOR` for the backward pass; `MMV_ZOO_TILE_MEMORY`
  sets the memory), up to 16; the patch is halved while not even 2 fit;
- normalization: stain (Macenko) for RGB, `center` for 3D stacks with a high offset and little
  contrast (brightfield-like), percentiles otherwise (kept for self-supervised denoising);
- loss, sampling and labels: where the foreground covers < 10 % of the pixels, Dice + cross-entropy
  and half the patches centred on foreground; instance label images used as a foreground mask for
  semantic segmentation;
- training length: 64 optimizer steps per training image, at least 300.

The entry is validated before anything is written; its README lists the fingerprint. `--search K`
trains K variants with k-fold cross-validation and keeps the best (`catalog.search`), its README
then holds the comparison.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..entry import RDF_NAME, load_entry, read_entry_yaml, resolve_entry_path, validate_entry_data
from ..errors import EntryError, OutputError
from .fingerprint import Fingerprint, fingerprint
from .scaffold import DROPPED_MMV, DROPPED_TOP, NAME

TASKS = ("segmentation", "instance", "regression", "denoise")
TEMPLATES = {
    ("segmentation", 2, False): "nuclei_semseg_2d", ("segmentation", 2, True): "semantic_seg_2d_glas",
    ("segmentation", 3, False): "semantic_seg_3d_fibrillarin",
    ("instance", 2, False): "nuclei_instance_2d", ("instance", 3, False): "instance_seg_3d_embedseg",
    ("regression", 2, False): "labelfree_2d_fnet", ("regression", 3, False): "labelfree_3d_fnet",
    ("denoise", 2, False): "denoise_2d_n2v", ("denoise", 3, False): "denoise_3d_n2v",
}
TRAINING_FACTOR = 3.0
"""Training holds activations for the backward pass, gradients and optimizer state: about this many
times the inference activation memory per voxel."""
STEPS_PER_IMAGE, MIN_STEPS, MAX_STEPS = 64, 300, 20000
MAX_BATCH = 16
CPU_STEP_VOXELS = {2: 8 * 128 * 128, 3: 4 * 32 * 64 * 64}
"""Without a GPU, the voxels of one optimizer step (batch x patch) are bounded too: about a second."""
MIN_CPU_BATCH = 4


@dataclass
class Planned:
    folder: Path
    template: str
    fingerprint: Fingerprint
    reasons: dict[str, str]
    """Dotted path under config.mmv_zoo -> why it has its value."""


def _template(task: str, dims: int, rgb: bool, wanted: str | None) -> str:
    if wanted is not None:
        return wanted
    return TEMPLATES.get((task, dims, rgb)) or TEMPLATES[(task, dims, False)]


def plan_entry(data: Path, task: str, out: Path, template: str | None = None, search: int = 0,
               search_steps: int | None = None, folds: int = 3,
               on_candidate: Any = None) -> Planned:
    """Fingerprint `data`, derive an entry for `task` and write it to `out` (rdf.yaml and README.md).
    `search` >= 2 trains that many variants with `folds`-fold cross-validation (`catalog.search`)
    and keeps the best."""
    if task not in TASKS:
        raise EntryError(f"--task {task!r}: choose {', '.join(TASKS)}")
    out = Path(out)
    if not NAME.match(out.name):
        raise EntryError(f"--out {out}: the folder name is the entry's name: letters, digits, _ and -")
    if out.exists():
        raise OutputError(f"{out}: already exists; choose another --out (nothing was changed)")
    first = load_entry(_template(task, 2, False, template))
    fp = fingerprint(Path(data), first.mmv.data.layout, task)
    slug = _template(task, fp.spatial_dims, fp.rgb, template)
    entry = load_entry(slug)
    if entry.spatial_dims != fp.spatial_dims:
        raise EntryError(f"--from {slug}: a {entry.spatial_dims}D entry, but {data} holds {fp.spatial_dims}D images")
    if entry.mmv.data.layout != first.mmv.data.layout:  # the chosen template lays its data out otherwise
        fp = fingerprint(Path(data), entry.mmv.data.layout, task)
    source = resolve_entry_path(slug)
    doc = read_entry_yaml(source)
    doc = {k: v for k, v in doc.items() if k not in DROPPED_TOP}
    mmv = {k: v for k, v in doc["config"]["mmv_zoo"].items() if k not in DROPPED_MMV}
    doc["config"] = {**doc["config"], "mmv_zoo": mmv}
    doc.update(name=f"{out.name} (planned)", documentation="README.md",
               description=f"Planned by mmv-zoo plan from {Path(data).name} ({task}), method of {slug}: "
                           + " ".join(str(doc["description"]).split()))
    reasons: dict[str, str] = {}
    if fp.channels != entry.in_channels:  # the data's channels, named as the files name them
        axis = next(a for a in doc["inputs"][0]["axes"] if a.get("type") == "channel")
        axis["channel_names"] = [re.sub(r"[^A-Za-z0-9_]", "_", n) or f"channel{i}"
                                 for i, n in enumerate(fp.channel_names)]
        if task == "denoise":
            raise EntryError(f"{data}: {fp.channels} channels, but {slug} denoises {entry.in_channels} into as "
                             "many; give --from an entry with as many channels")
        reasons["inputs"] = f"{fp.channels} channels in the data"
    _derive(mmv, entry, fp, task, reasons)
    validate_entry_data(doc, f"{out / RDF_NAME} (planned)")
    compared = ""
    if search >= 2:
        from .search import SEARCH_STEPS, changed_paths, run_search, table

        steps = search_steps or SEARCH_STEPS
        ranked = run_search(doc, task, Path(data), entry.mmv.data.layout, search, folds, steps, on_candidate)
        best, planned = ranked[0], next(c for c in ranked if c.name == "planned")
        for path in changed_paths(planned.mmv, best.mmv):
            reasons[path] = (f"--search: {best.change} scored {best.score:.4f} against the plan's "
                             f"{planned.score:.4f} ({len(best.scores)}-fold cross-validation)")
        doc["config"]["mmv_zoo"] = best.mmv
        validate_entry_data(doc, f"{out / RDF_NAME} (planned, searched)")
        compared = table(ranked, task, steps)
    text = _commented(yaml.safe_dump(doc, sort_keys=False, width=110, default_flow_style=None), reasons)
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        (tmp / RDF_NAME).write_text(text)
        (tmp / "README.md").write_text(_readme(out, slug, task, data, fp, reasons, compared))
        tmp.rename(out)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{out}: cannot create ({e.strerror or e})") from None
    return Planned(out, slug, fp, reasons)


# ---------------------------------------------------------------- the derivations


def _set(mmv: dict[str, Any], path: str, value: Any, reason: str, reasons: dict[str, str]) -> None:
    node = mmv
    *parents, last = path.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    reasons[path] = reason


def _pow2_floor(n: float) -> int:
    return 2 ** int(math.floor(math.log2(max(n, 1))))


def _derive(mmv: dict[str, Any], entry: Any, fp: Fingerprint, task: str, reasons: dict[str, str]) -> None:
    dims = fp.spatial_dims
    z, y, x = fp.shape
    cap = 256 if dims == 2 else 128
    inplane = min(cap, _pow2_floor(min(y, x)))
    why = f"median image {y} x {x} px (at most {cap})"
    if task == "instance" and fp.object_diameter:
        need = 2 ** math.ceil(math.log2(4 * fp.object_diameter))
        if need > inplane and need <= min(y, x):
            inplane, why = need, f"4 x the median object diameter {fp.object_diameter:.0f} px"
    net, settings, steps = _network(mmv["network"], inplane, fp, reasons)
    patch = [inplane, inplane]
    if dims == 3:
        zp = max(steps[0], min(32, (z // steps[0]) * steps[0]))
        patch = [zp, *patch]
        why += f"; z {zp} of {z} slices"
    patch = [max(s, (p // s) * s) for p, s in zip(patch, steps, strict=True)]
    batch, fitted, mem_why = _fit_memory(settings, dims, entry, patch, steps)
    if fitted[-1] != patch[-1]:  # a smaller patch: fewer levels fit it
        net, settings, steps = _network(mmv["network"], fitted[-1], fp, reasons)
        fitted = [max(s, (p // s) * s) for p, s in zip(fitted, steps, strict=True)]
    mmv["network"], patch = net, fitted
    _set(mmv, "data.patch", patch, why + mem_why, reasons)
    _set(mmv, "training.batch_size", batch, f"{_gib()} for training ({TRAINING_FACTOR:g}x the activation memory "
         f"measured per voxel){'; at most ' + str(MAX_BATCH) if batch == MAX_BATCH else ''}"
         + (f"; at most {CPU_STEP_VOXELS[dims]} voxels per CPU step" if not _cuda() else ""), reasons)
    _normalization(mmv, fp, task, reasons)
    if task == "segmentation" and fp.foreground is not None:
        rare = fp.foreground < 0.1
        kind = mmv["loss"].get("kind")
        if rare and kind != "dice_ce":
            mmv["loss"] = {"kind": "dice_ce"}
        reasons["loss"] = (f"foreground {fp.foreground:.3f} (rare): Dice + cross-entropy, which Dice keeps "
                           "balanced" if rare else f"foreground {fp.foreground:.3f}: the template's {kind} kept")
        share = 0.5 if rare else 0.0
        _set(mmv, "data.sampling.foreground_fraction", share,
             f"foreground {fp.foreground:.3f} of the pixels" + (" (rare)" if share else ""), reasons)
        if fp.instances:
            _set(mmv, "data.labels", "foreground", f"{len(fp.label_values)} label values: instance labels "
                 "used as a foreground mask", reasons)
    n_train = max(1, fp.n_images - 1)
    total = min(MAX_STEPS, max(MIN_STEPS, STEPS_PER_IMAGE * n_train))
    per_image = int(mmv.get("training", {}).get("patches_per_image", entry.mmv.training.patches_per_image))
    epochs = max(1, math.ceil(total * batch / (per_image * n_train)))
    _set(mmv, "training.max_epochs", epochs, f"{total} steps: {STEPS_PER_IMAGE} per training image "
         f"(at least {MIN_STEPS}) for {n_train} training image(s), {per_image} patches each, batch {batch}",
         reasons)
    mmv.get("training", {}).pop("max_time", None)


def _network(template: dict[str, Any], inplane: int, fp: Fingerprint,
             reasons: dict[str, str]) -> tuple[dict[str, Any], Any, list[int]]:
    """The template's network with levels for an `inplane` patch and z strides for the anisotropy;
    its settings model and step per axis."""
    dims = fp.spatial_dims
    anisotropy = fp.anisotropy or 1.0
    net = dict(template)
    kind = net["kind"]
    levels = max(2, min(4, int(math.log2(max(inplane, 32) / 16))))
    z_down, ratio = [], anisotropy  # z spacing over the in-plane one at each level (nnU-Net's rule:
    for level in range(levels):     # halve z once it is at most twice as coarse as the plane)
        z_down.append(dims == 3 and ratio <= 2 * 2 ** level)
        ratio *= 2 if z_down[-1] else 1
    z_reason = (f"; z pixels {anisotropy:.1f}x the in-plane ones: z halved only once the plane is at most 2x finer"
                if dims == 3 and anisotropy > 1.5 else "")
    if kind == "fnet":
        net["depth"] = levels
        reasons["network.depth"] = f"{levels} halvings keep >= 16 px at the bottom of a {inplane} px patch"
        if dims == 3:
            net["anisotropic_z"] = not all(z_down)
            reasons["network.anisotropic_z"] = (f"z {anisotropy:.1f}x the in-plane pixel size" if not all(z_down)
                                                else "z sampled like the plane: downsampled too")
    elif kind == "care_unet":
        net["depth"] = min(levels, 3)
        reasons["network.depth"] = f"{net['depth']} halvings of a {inplane} px patch"
    elif kind in ("unet", "attention_unet") and isinstance(net.get("channels"), list):
        base = int(net["channels"][0])
        net["channels"] = [base * 2 ** i for i in range(levels + 1)]
        net["strides"] = [[2 if zd else 1, 2, 2] if dims == 3 else 2 for zd in z_down]
        reasons["network.channels"] = f"{levels} levels for a {inplane} px patch"
        reasons["network.strides"] = "2 in plane per level" + (z_reason or ("; z too" if dims == 3 else ""))
    elif kind == "dyn_unet":
        net["strides"] = [1] + [[2 if zd else 1, 2, 2] if dims == 3 else 2 for zd in z_down]
        net["kernel_size"] = [3] + [[3 if zd else 1, 3, 3] if dims == 3 else 3 for zd in z_down]
        net.pop("filters", None)
        reasons["network.strides"] = f"{levels} downsamplings for a {inplane} px patch" + z_reason
        reasons["network.kernel_size"] = "3 per axis; 1 along z where z is not downsampled" if dims == 3 else "3"
    settings = validate_network(net, dims)
    return net, settings, [r.step for r in settings.size_rule(dims)]


def validate_network(net: dict[str, Any], dims: int) -> Any:
    """The network settings model of `net` (EntryError naming the field when invalid)."""
    from pydantic import TypeAdapter, ValidationError

    from ..settings.networks import NetworkSettings

    try:
        settings = TypeAdapter(NetworkSettings).validate_python(net)
        settings.check_dims(dims)
    except (ValidationError, ValueError) as e:
        raise EntryError(f"planned network: {' '.join(str(e).split())[:300]}") from None
    return settings


def _gib() -> str:
    from ..predict.memory import ENV, tile_memory

    memory = tile_memory("cuda" if _cuda() else "cpu")
    where = ENV if os.environ.get(ENV) else ("GPU" if _cuda() else "CPU") + " memory share"
    return f"{memory / 2**30:.2f} GiB ({where})"


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _fit_memory(settings: Any, dims: int, entry: Any, patch: list[int],
                steps: list[int]) -> tuple[int, list[int], str]:
    """Batch size for `patch` within the device's memory; the patch halved (in plane) while < 2 fit."""
    from ..nets.factory import build_network
    from ..predict.memory import bytes_per_voxel, tile_memory

    net = build_network(settings, dims, entry.in_channels, entry.out_channels)
    probe = [max(2 * s, 16 if dims == 2 else 8) for s in steps]
    per_voxel = TRAINING_FACTOR * bytes_per_voxel(net.eval(), entry.in_channels, probe)
    memory = tile_memory("cuda" if _cuda() else "cpu")
    cpu = not _cuda()
    note = ""
    while True:
        batch = int(memory // (per_voxel * math.prod(patch)))
        if cpu:  # on a CPU the time of a step counts too
            batch = min(batch, CPU_STEP_VOXELS[dims] // math.prod(patch))
        smallest = all(p <= 2 * s for p, s in zip(patch[-2:], steps[-2:], strict=True))
        if batch >= (MIN_CPU_BATCH if cpu else 2) or smallest:
            break
        patch = patch[:-2] + [max(2 * s, (p // 2 // s) * s) for p, s in zip(patch[-2:], steps[-2:], strict=True)]
        note = (f"; halved in plane for a batch of {MIN_CPU_BATCH} within {CPU_STEP_VOXELS[dims]} voxels per "
                "CPU step" if cpu else "; halved in plane to fit the memory")
    return max(1, min(MAX_BATCH, batch)), patch, note


def _normalization(mmv: dict[str, Any], fp: Fingerprint, task: str, reasons: dict[str, str]) -> None:
    norm = mmv["data"].setdefault("normalization", {})
    if task == "denoise":
        reasons["data.normalization.source"] = "kept from the template: the blind-spot loss is on normalized noise"
        return
    if fp.rgb:
        value, why = {"kind": "macenko"}, "RGB images (stained histology): stain normalization"
    elif fp.spatial_dims == 3 and fp.variation < 0.15:
        value, why = {"kind": "center"}, (f"3D with std/mean {fp.variation:.3f} (a high offset, little contrast, "
                                          "brightfield-like): statistics of the central slices")
    else:
        value, why = {"kind": "percentile", "lower": 1.0, "upper": 99.8}, (
            f"fluorescence-like intensities (outliers {fp.outliers:.2f} of the p1-p99.8 range beyond p99.8)")
    norm["source"] = value
    reasons["data.normalization.source"] = why


def _commented(text: str, reasons: dict[str, str]) -> str:
    """YAML `text` with `# reason` after the line of every key path under config.mmv_zoo in `reasons`."""
    out, stack = [], []
    for line in text.splitlines():
        m = re.match(r"^(\s*)([A-Za-z_][\w]*):", line)
        if m:
            indent = len(m.group(1))
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, m.group(2)))
            path = [k for _, k in stack]
            key = ".".join(path[2:])
            if path[:2] == ["config", "mmv_zoo"] and key in reasons:
                line = f"{line}  # {reasons[key]}"
            elif path[:2] == ["config", "mmv_zoo"] and key and "{" in line:  # a flow mapping: its keys' reasons
                inner = [f"{k[len(key) + 1:]}: {v}" for k, v in reasons.items() if k.startswith(key + ".")]
                if inner:
                    line = f"{line}  # {'; '.join(inner)}"
        out.append(line)
    return "\n".join(out) + "\n"


def _readme(folder: Path, template: str, task: str, data: Path, fp: Fingerprint, reasons: dict[str, str],
            compared: str = "") -> str:
    name = folder.name
    rows = "\n".join(f"| {k} | {v} |" for k, v in fp.facts())
    why = "\n".join(f"- `{k}`: {v}" for k, v in reasons.items())
    return f"""# {name}

Planned by `mmv-zoo plan {data} --task {task}` from the method of `{template}`.

## Fingerprint of the data

| fact | value |
|---|---|
{rows}

## Derived values (also commented in rdf.yaml)

{why}
{("" if not compared else chr(10) + "## Candidates compared" + chr(10) + chr(10) + compared)}
## Next

- **Train**: `mmv-zoo train {folder} --data {data} --out runs`.
- **Evaluate** on images the model never saw: `mmv-zoo evaluate runs/{name}/<run> --data HELD_OUT`.
"""
