"""The zoo as a catalog: one summary row per entry (`mmv-zoo list`), an entry's card (`mmv-zoo show
--card`) and the generated `zoo/README.md` table (`scripts/zoo_readme.py`), all from the entries."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..entry import ZOO_DIR, Entry, bundled_entries, load_entry

PACKAGE_PARENT = Path(__file__).resolve().parents[2]
SAMPLE_PATH = re.compile(r"mmv_zoo/sample_data/[\w./-]*\w")
README_HEADER = (
    "# The mmv_zoo zoo\n\n"
    "<!-- Generated from the entries by `python scripts/zoo_readme.py` (`make zoo-readme`); do not edit. -->\n\n"
    "Every folder here is an entry: `rdf.yaml` (BioImage.IO model fields plus `config.mmv_zoo`) and a\n"
    "README. Browse them with `mmv-zoo list [--task T] [--dims 2|3] [--framework F]` and\n"
    "`mmv-zoo show ENTRY --card`; train one with `mmv-zoo train ENTRY --data DATA --out runs`.\n"
    "*weights*: where `config.mmv_zoo.pretrained` comes from (none: train first); *data*: `bundled` when\n"
    "the training data ships with mmv_zoo, `recipe` when the entry says how to fetch it, `described` when\n"
    "`training_data` only describes it.\n\n"
)
COLUMNS = ("entry", "task", "framework", "network", "dims", "weights", "data")


@dataclass(frozen=True)
class Summary:
    """One entry as a row of the catalog."""

    entry: str
    task: str
    framework: str
    network: str
    dims: str
    weights: str
    data: str
    name: str

    def cells(self) -> list[str]:
        return [getattr(self, c) for c in COLUMNS]


def weights_label(entry: Entry) -> str:
    """Where the entry's pretrained weights come from, or `train first`."""
    pre = entry.mmv.pretrained
    if pre is None:
        return "train first"
    from ..remote.pretrained import is_doi

    kind = "DOI" if is_doi(pre.source) else "URL" if "://" in pre.source else "bundled"
    what = ", MMV_Im2Im" if pre.format == "mmv_im2im_checkpoint" else ""
    return f"{kind}{what}{'' if pre.sha256 else ' (sha256 on first pull)'}"


def _data_recipe(entry: Entry) -> Any:
    """The entry's data recipe (where its public data lives and how to arrange it), if any."""
    return entry.mmv.recipe


def bundled_data(entry: Entry) -> list[str]:
    """Folders of data shipped with mmv_zoo that the entry's `training_data` names (existing ones only)."""
    text = str((entry.training_data or {}).get("description", ""))
    return [p for p in dict.fromkeys(SAMPLE_PATH.findall(text)) if (PACKAGE_PARENT / p).exists()]


def data_label(entry: Entry) -> str:
    """`bundled`, `recipe`, `described` (comma-joined when several hold) or `-`."""
    labels = [name for name, present in (("bundled", bundled_data(entry)), ("recipe", _data_recipe(entry)),
                                          ("described", entry.training_data)) if present]
    if len(labels) > 1 and labels[-1] == "described":
        labels.pop()  # bundled or recipe data are described anyway
    return ", ".join(labels) or "-"


def summarize(slug: str, entry: Entry) -> Summary:
    mmv = entry.mmv
    return Summary(slug, mmv.task, mmv.framework, mmv.network.kind, f"{entry.spatial_dims}D", weights_label(entry),
                   data_label(entry), entry.name)


def catalog(task: str | None = None, dims: int | None = None, framework: str | None = None,
            zoo: Path = ZOO_DIR) -> list[Summary]:
    """Summaries of the entries in `zoo` (default: the bundled zoo) that match every given filter."""
    slugs = bundled_entries() if zoo == ZOO_DIR else sorted(p.parent.name for p in zoo.glob("*/rdf.yaml"))
    rows = []
    for slug in slugs:
        entry = load_entry(zoo / slug)
        if ((task is None or entry.mmv.task == task) and (dims is None or entry.spatial_dims == dims)
                and (framework is None or entry.mmv.framework == framework)):
            rows.append(summarize(slug, entry))
    return rows


def _readme_lines(entry: Entry) -> list[str]:
    """The bullet lines of the entry's README (its documentation), without markdown emphasis."""
    if entry.source is None or entry.documentation is None:
        return []
    path = entry.source.parent / entry.documentation
    if not path.is_file():
        return []
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _readme_bullet(lines: list[str], *titles: str) -> str | None:
    """The README bullet `- **Title**: text` (with its continuation lines) for the first matching title."""
    for title in titles:
        for i, line in enumerate(lines):
            if line.lower().startswith(f"- **{title.lower()}**"):
                text = [line.split(":", 1)[1].strip() if ":" in line else line]
                for more in lines[i + 1:]:
                    if more.startswith(("-", "#")):
                        break
                    text.append(more)
                return " ".join(text)
    return None


def card(entry: Entry, slug: str | None = None) -> str:
    """The entry's card as plain text (markdown-ish): what it is, its citations, data, metrics, weights."""
    mmv, slug = entry.mmv, slug or entry.slug
    out = [f"# {slug}: {entry.name}", "", " ".join(entry.description.split()), ""]
    ins, outs = entry.inputs[0], entry.outputs[0]
    out += [f"task:      {mmv.task} ({mmv.framework} framework)",
            f"network:   {mmv.network.kind}, {entry.spatial_dims}D, patch {mmv.data.patch}",
            f"input:     {ins.id} [{', '.join(ins.channel_names)}], axes "
            f"{''.join(a.id for a in ins.space_axes)}",
            f"output:    {outs.id} [{', '.join(outs.channel_names)}]",
            f"normalize: source {mmv.data.normalization.source.kind}, target {mmv.data.normalization.target.kind}",
            f"license:   {entry.license}"]
    if entry.source is not None:
        out.append(f"folder:    {entry.source.parent}")
    out += ["", "Citations:"]
    for c in entry.cite:
        ref = f"doi:{c.doi}" if c.doi else c.url
        out.append(f"  - {c.text}" + (f" ({ref})" if ref else ""))
    out += ["", "Data:"]
    lines = _readme_lines(entry)
    described = (entry.training_data or {}).get("description")
    layout = _readme_bullet(lines, "Data layout", "Data")
    bundled = bundled_data(entry)
    recipe = _data_recipe(entry)
    if described:
        out.append(f"  training data: {' '.join(str(described).split())}")
    if layout:
        out.append(f"  layout: {layout}")
    if bundled:
        out.append(f"  bundled: {', '.join(bundled)} (mmv-zoo train {slug} --data {bundled[0]})")
    if recipe:
        out.append(f"  recipe: {' '.join(recipe.description.split())}")
        for name, d in recipe.downloads.items():
            where = d.url or f"doi:{d.doi} ({d.file})"
            out.append(f"    {name}: {where}" + (f", {d.size}" if d.size else ""))
        if recipe.citation:
            out.append(f"    cite: {recipe.citation}")
        out.append(f"    try: mmv-zoo data pull {slug} --out data/{slug}")
    if not (described or layout or bundled or recipe):
        out.append("  not described: see the entry's README")
    pre = mmv.pretrained
    result = _readme_bullet(lines, "Result", "Results", "Metrics")
    out += ["", "Metrics:"]
    if mmv.paper is not None:
        value = "not reported" if mmv.paper.value is None else f"{mmv.paper.value:g}"
        out.append(f"  paper ({mmv.paper.metric}): {value}" + (f" ({mmv.paper.note})" if mmv.paper.note else ""))
    if pre is not None and pre.metrics:
        out += [f"  {k}: {v:g}" for k, v in pre.metrics.items()]
    if result:
        out.append(f"  README: {result}")
    if not ((pre is not None and pre.metrics) or result or mmv.paper):
        out.append("  none recorded yet (train the entry; `mmv-zoo evaluate` scores a run)")
    out += ["", f"Weights: {weights_label(entry)}"]
    if pre is not None:
        out.append(f"  source: {pre.source}" + (f" (member {pre.member})" if pre.member else ""))
        out.append(f"  format: {pre.format}; sha256: {pre.sha256 or 'recorded on first pull'}")
        if pre.trained_on:
            out.append(f"  trained on: {pre.trained_on}")
        out.append(f"  try: mmv-zoo predict {slug} IMAGE --out OUT")
    else:
        out.append(f"  try: mmv-zoo train {slug} --data DATA --out runs")
    return "\n".join(out) + "\n"


def zoo_readme(zoo: Path = ZOO_DIR) -> str:
    """The generated zoo/README.md: a table linking every entry folder of `zoo`."""
    rows = catalog(zoo=zoo)
    head = ["entry", "name", "task", "framework", "network", "dims", "weights", "data"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [f"[{r.entry}]({r.entry}/)", r.name, r.task, r.framework, f"`{r.network}`", r.dims, r.weights, r.data]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return README_HEADER + "\n".join(lines) + f"\n\n{len(rows)} entries.\n"


def pretrained_note(entry: Entry) -> str | None:
    """What is known of the sha256 of pretrained weights fetched by URL or DOI without one in the entry
    (the first pull records it: trust on first use); None when the entry states it or has none."""
    from ..remote.pretrained import is_doi, recorded_sha256

    pre = entry.mmv.pretrained
    if pre is None or pre.sha256 is not None or not ("://" in pre.source or is_doi(pre.source)):
        return None
    seen = recorded_sha256(pre.source, pre.file)
    note = (f"recorded on first pull (trust on first use): {seen}" if seen
            else "not known yet: the first pull records it")
    what = f"archive (holding {pre.member})" if pre.member else "package"
    return f"pretrained {what} sha256 {note}"
