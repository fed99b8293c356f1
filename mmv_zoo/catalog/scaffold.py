"""`mmv-zoo new ENTRY --from TEMPLATE`: a new entry folder from an existing entry, to adapt a paper's
experiment to one's own data by editing YAML only.

The template's method is kept (framework, network, loss, normalization, patch, training, the GAN or
EmbedSeg block, citations); what belongs to the template's own trained model and data is left out
(`config.mmv_zoo.pretrained`, `recipe`, `paper`, and `training_data`, `covers`, `id`),
and the README stub lists what was left out and what to edit. The file keeps the template's
formatting and comments where it can.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..entry import RDF_NAME, load_entry, read_entry_yaml, resolve_entry_path, validate_entry_data
from ..errors import EntryError, OutputError

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
DROPPED_TOP = {
    "training_data": "the template's training data",
    "covers": "cover images of the template's folder (not copied)",
    "id": "the template's BioImage.IO id",
}
DROPPED_MMV = {
    "pretrained": "the template's trained weights: this entry has none until you train it (and `mmv-zoo "
                  "publish` the run into it)",
    "recipe": "how the template's public data is downloaded (`mmv-zoo data pull`)",
    "paper": "the metric the paper reports for the template's data",
}


@dataclass
class NewEntry:
    folder: Path
    template: Path
    """The template's rdf.yaml."""
    dropped: list[str]
    """Fields left out, as `config.mmv_zoo.pretrained`, `training_data`, ..."""


def new_entry(name: str, template: str | Path, zoo: Path) -> NewEntry:
    """Create `zoo/name/` (rdf.yaml and README.md) from `template` (a bundled entry name, folder or
    rdf.yaml); the result is validated before anything is written."""
    if not NAME.match(name):
        raise EntryError(f"ENTRY {name!r}: use letters, digits, _ and - only, starting with a letter or digit "
                         "(it becomes the folder name), e.g. my_nuclei_2d")
    folder = Path(zoo) / name
    if folder.exists() or folder.is_symlink():
        raise OutputError(f"{folder}: already exists; choose another ENTRY name or --zoo (nothing was changed)")
    source = resolve_entry_path(template)
    loaded = load_entry(source)  # a template that is itself invalid fails here, naming its field
    data = read_entry_yaml(source)
    dropped = [k for k in DROPPED_TOP if k in data]
    mmv = data.get("config", {}).get("mmv_zoo", {})
    dropped += [f"config.mmv_zoo.{k}" for k in DROPPED_MMV if k in mmv]
    new = {k: v for k, v in data.items() if k not in DROPPED_TOP}
    new["config"] = {**data["config"], "mmv_zoo": {k: v for k, v in mmv.items() if k not in DROPPED_MMV}}
    changed = {"name": name if len(name) >= 5 else f"{name} entry",
               "description": f"Adapted from the zoo entry {loaded.slug}: {' '.join(str(data['description']).split())}",
               "documentation": "README.md"}
    new.update(changed)
    validate_entry_data(new, f"{folder / RDF_NAME} (new from {source})")
    text = _edited_text(source.read_text(), changed, list(DROPPED_TOP), list(DROPPED_MMV))
    if text is None or yaml.safe_load(text) != new:  # keep the template's layout and comments when we can
        text = yaml.safe_dump(new, sort_keys=False, width=100)
    tmp = folder.with_name(f".{name}.partial-{os.getpid()}")
    try:
        tmp.mkdir(parents=True)
        (tmp / RDF_NAME).write_text(text)
        (tmp / "README.md").write_text(readme(folder, loaded, dropped))
        tmp.rename(folder)  # refuses a folder made meanwhile
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"{folder}: cannot create ({e.strerror or e})") from None
    return NewEntry(folder, source, dropped)


def _block_end(lines: list[str], start: int, indent: int) -> int:
    """End (exclusive) of the YAML block starting at line `start` with key indent `indent`."""
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > indent):
        end += 1
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1
    return end


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _edited_text(text: str, changed: dict[str, Any], top: list[str], mmv: list[str]) -> str | None:
    """The template's text with top-level `changed` keys rewritten and the `top` and `config.mmv_zoo`
    `mmv` blocks removed; None when the file is not laid out in plain blocks."""
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"

    def find(key: str, lo: int, hi: int, indent: int) -> int | None:
        pattern = re.compile(rf"^{' ' * indent}{re.escape(key)}:(\s|$)")
        return next((i for i in range(lo, hi) if pattern.match(lines[i])), None)

    for key in top:
        if (i := find(key, 0, len(lines), 0)) is not None:
            del lines[i:_block_end(lines, i, 0)]
    config = find("config", 0, len(lines), 0)
    if config is not None:
        children = [i for i in range(config + 1, _block_end(lines, config, 0)) if lines[i].strip()
                    and not lines[i].lstrip().startswith("#")]
        at = next((i for i in children if re.match(r"^\s+mmv_zoo:\s*(#.*)?$", lines[i])), None)
        if at is None:
            return None
        body = [i for i in range(at + 1, _block_end(lines, at, _indent(lines[at])))
                if lines[i].strip() and not lines[i].lstrip().startswith("#")]
        if body:
            indent = _indent(lines[body[0]])
            for key in mmv:
                end = _block_end(lines, at, _indent(lines[at]))
                if (i := find(key, at + 1, end, indent)) is not None:
                    del lines[i:_block_end(lines, i, indent)]
    for key, value in changed.items():
        new = _dump_top(key, value)
        if (i := find(key, 0, len(lines), 0)) is not None:
            lines[i:_block_end(lines, i, 0)] = new
        elif (after := find("license", 0, len(lines), 0)) is not None:
            end = _block_end(lines, after, 0)
            lines[end:end] = new
        else:
            return None
    return "".join(lines)


def _dump_top(key: str, value: Any) -> list[str]:
    """Lines of a top-level `key: value`; long text as a folded block, as the bundled entries write it."""
    if isinstance(value, str) and len(value) > 80 and value == value.strip() and "\n" not in value:
        import textwrap

        return [f"{key}: >-\n", *(f"  {line}\n" for line in textwrap.wrap(value, 98, break_on_hyphens=False,
                                                                          break_long_words=False))]
    return yaml.safe_dump({key: value}, sort_keys=False, width=100).splitlines(keepends=True)


def _layout_lines(entry: Any) -> list[str]:
    """Where the training files go, in the words of the entry's data settings."""
    data = entry.mmv.data
    layout = data.layout
    where = "`DIR/train/` and `DIR/val/`, each holding" if data.split.kind == "presplit" and layout.layout != "csv" \
        else "`DIR` (the `--data` folder) holds"
    if layout.layout == "csv":
        cols = f"`{layout.source_column}` and `{layout.target_column}` columns (paths relative to the CSV)"
        extra = [c for c in (layout.split_column, layout.exclusion_column) if c]
        return [f"`DIR/{layout.file}` lists the pairs: {cols}" + (f", plus {', '.join(f'`{c}`' for c in extra)}"
                                                                   if extra else "")]
    if layout.layout == "source_folder":
        return [f"{where} `{layout.source}/`: the noisy images alone (no targets; a single image is split by "
                "region" + ("; every plane of a stack is an image" if layout.planes else "") + ")"]
    if layout.layout == "unpaired_folders":
        return [f"{where} `{layout.source}/` (images of the input domain) and `{layout.target}/` (the output "
                "domain): two unrelated sets, names and counts need not match"]
    out = [f"{where} `{layout.source}/` (inputs) and `{layout.target}/` (targets), matched by file name"
           + (f" (suffixes `{layout.source_suffix}` / `{layout.target_suffix}`)"
              if layout.source_suffix or layout.target_suffix else "")]
    if layout.exclusion:
        out.append(f"optional `{layout.exclusion}/`: exclusion masks named like the inputs (non-zero pixels are "
                   "left out of the loss)")
    return out


def _normalization(side: Any) -> str:
    fields = {k: v for k, v in side.model_dump(exclude_none=True).items() if isinstance(v, int | float | str)}
    kind = fields.pop("kind")
    return f"`{kind}`" + (f" ({', '.join(f'{k} {v}' for k, v in fields.items())})" if fields else "")


def readme(folder: Path, entry: Any, dropped: list[str]) -> str:
    """The new entry's README stub: where it came from, what was left out and what to edit."""
    name, mmv = folder.name, entry.mmv
    norm = mmv.data.normalization
    task = {"segmentation": "class ids (0 = background) per pixel", "instance": "instance labels (one id per object)",
            "regression": "images"}[mmv.task]
    left_out = {**DROPPED_TOP, **{f"config.mmv_zoo.{k}": v for k, v in DROPPED_MMV.items()}}
    lines = [f"# {name}", "",
             f"Adapted from the zoo entry `{entry.slug}` ({entry.name}; `{entry.source}`) by `mmv-zoo new`. Its "
             f"method is kept: framework `{mmv.framework}`, task `{mmv.task}`, network `{mmv.network.kind}`, loss "
             f"`{mmv.loss.kind}`, normalization, patch and training settings, citations.", ""]
    if dropped:
        lines += ["Left out, as they describe the template's own trained model and data:", ""]
        lines += [f"- `{k}`: {left_out[k]}" for k in dropped]
        lines.append("")
    inputs, outputs = entry.inputs[0].channel_names, entry.outputs[0].channel_names
    lines += [
        "## What to edit in rdf.yaml", "",
        "- **Data layout** (`config.mmv_zoo.data.layout`, `split`): " + "; ".join(_layout_lines(entry))
        + ". Rename the folders to yours, or change the layout (`paired_folders`, `csv`).",
        f"- **Channels**: `inputs[0]` takes {len(inputs)} channel(s) named {inputs}; `outputs[0]` gives "
        f"{len(outputs)} ({outputs}); targets are {task}. One name per channel of your images"
        + (" (segmentation: one per class, background first)" if mmv.task == "segmentation" else "")
        + ". Set each space axis's `scale` and `unit` to your pixel size.",
        f"- **Normalization** (`config.mmv_zoo.data.normalization`): source {_normalization(norm.source)}, "
        f"target {_normalization(norm.target)}. Check it suits your images "
        "(`percentile`, `standard`, `center`, `foreground`, `macenko`, `none`).",
        f"- **Patch and training**: `data.patch` {mmv.data.patch} (the network's valid sizes are checked), "
        f"`training.max_epochs` {mmv.training.max_epochs}, `training.batch_size` {mmv.training.batch_size}.",
        "- **Description, authors, tags, cite**: yours; the template's citations may include its own data's.",
    ]
    gan = getattr(mmv, mmv.framework, None) if mmv.framework == "pix2pix" else None
    if gan is not None and gan.init_from:
        lines.append(f"- **`pix2pix.init_from`** points at `{gan.init_from}`, a run of the template's data.")
    lines += ["", "## Train", "", "```bash", f"mmv-zoo validate {folder}", f"mmv-zoo train {folder} --data DIR",
              "```", "",
              "A description of the data and the results belongs here once trained.", ""]
    return "\n".join(lines)
