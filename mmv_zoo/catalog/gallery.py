"""A static web site of a zoo: an index filterable by task, dimensionality and framework, and one page
per entry (cover, description, citations, metrics beside the paper's, the commands to predict, train
and export, and the package to download where one exists).

    build_gallery(Path("site"))                      # the bundled zoo
    build_gallery(Path("site"), zoo=Path("my_zoo"))  # a lab's own

Plain HTML and one stylesheet, relative links only: it opens from the file system and from any static
host. The index filters with a few lines of plain JavaScript; without it every entry is listed. An
entry without a cover image gets a drawn one (its input and output channels around the network),
marked as a schematic, so that every card has a picture and none pretends to be a result.
"""

from __future__ import annotations

import html
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..entry import ZOO_DIR, Entry, load_entry
from ..errors import EntryError, OutputError
from .listing import bundled_data, catalog, weights_label

STYLE = """
body { font-family: system-ui, sans-serif; margin: 0; color: #1d2327; background: #f6f7f9; }
header { background: #1d3557; color: white; padding: 1.2rem 2rem; }
header a { color: #cfe3ff; }
main { padding: 1.2rem 2rem; max-width: 1200px; }
.filters { display: flex; gap: 1rem; flex-wrap: wrap; margin-bottom: 1rem; align-items: center; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 1rem; }
.card { background: white; border-radius: 8px; box-shadow: 0 1px 3px #0002; overflow: hidden; }
.card a { color: inherit; text-decoration: none; display: block; }
.card img { width: 100%; height: 150px; object-fit: contain; background: #e9edf2; display: block; }
.card .text { padding: 0.6rem 0.8rem; }
.card h2 { font-size: 1rem; margin: 0 0 0.3rem; }
.tag { display: inline-block; font-size: 0.75rem; color: #1d2327; background: #e3ecf7; border-radius: 4px;
       padding: 0 0.35rem; margin: 0 0.2rem 0.2rem 0; }
.tag.weights { background: #d8f0dc; }
.cover { max-width: 100%; max-height: 360px; border-radius: 6px; background: white; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; }
td, th { border-bottom: 1px solid #dde2e8; padding: 0.25rem 0.8rem 0.25rem 0; text-align: left; }
pre { background: #1d2327; color: #e6edf3; padding: 0.7rem 1rem; border-radius: 6px; overflow-x: auto; }
.note { color: #5b6770; font-size: 0.9rem; }
"""

FILTER_SCRIPT = """
<script>
function applyFilters() {
  const want = {};
  for (const s of document.querySelectorAll('.filters select')) want[s.name] = s.value;
  const text = document.getElementById('search').value.toLowerCase();
  let shown = 0;
  for (const card of document.querySelectorAll('.card')) {
    const ok = Object.entries(want).every(([k, v]) => !v || card.dataset[k] === v)
               && card.textContent.toLowerCase().includes(text);
    card.hidden = !ok; if (ok) shown += 1;
  }
  document.getElementById('count').textContent = shown + ' shown';
}
for (const el of document.querySelectorAll('.filters select, #search')) el.addEventListener('input', applyFilters);
</script>
"""

COVER_CHECK = """
<script>
window.addEventListener('load', () => {
  const imgs = [...document.querySelectorAll('img')];
  const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'));
  document.body.dataset.images = broken.length ? 'broken: ' + broken.join(' ') : 'loaded ' + imgs.length;
});
</script>
"""


@dataclass(frozen=True)
class Gallery:
    """What `build_gallery` wrote."""

    index: Path
    pages: dict[str, Path]
    """Entry slug -> its page."""
    packages: list[Path]
    """Packages copied into the site for download."""


def build_gallery(out: Path, zoo: Path | None = None, overwrite: bool = False) -> Gallery:
    """Write the site of `zoo` (default: the bundled zoo) into `out`: index.html, entries/<slug>.html,
    covers/, packages/ and style.css. A non-empty `out` is replaced only with `overwrite`; the site is
    built in a hidden folder beside it and renamed into place when complete."""
    zoo_dir = Path(zoo) if zoo is not None else ZOO_DIR
    if not zoo_dir.is_dir() or not any(zoo_dir.glob("*/rdf.yaml")):
        raise EntryError(f"{zoo_dir}: not a zoo (no <entry>/rdf.yaml inside)")
    out = Path(out).absolute()
    if out == out.parent or zoo_dir.resolve() == out.resolve() or zoo_dir.resolve() in out.resolve().parents \
            or out.resolve() in zoo_dir.resolve().parents:
        raise OutputError(f"{out}: --out must be a folder of its own, outside the zoo {zoo_dir}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise OutputError(f"{out}: exists and is not empty (pass --overwrite to replace it)")
    rows = catalog(zoo=zoo_dir)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    for sub in ("entries", "covers", "packages"):
        (tmp / sub).mkdir(parents=True)
    try:
        (tmp / "style.css").write_text(STYLE)
        pages, packages, cards = {}, [], []
        for row in rows:
            entry = load_entry(zoo_dir / row.entry)
            cover = _cover(entry, row.entry, tmp / "covers")
            package = _package(entry, row.entry, tmp / "packages")
            if package is not None and not package.startswith("http"):
                packages.append(out / package)
            page = tmp / "entries" / f"{row.entry}.html"
            page.write_text(_entry_page(entry, row.entry, cover, package))
            pages[row.entry] = out / "entries" / page.name
            cards.append(_card(entry, row, cover))
        (tmp / "index.html").write_text(_index(cards, rows, zoo_dir))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Gallery(out / "index.html", pages, packages)


# ---------------------------------------------------------------- pieces


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _cover(entry: Entry, slug: str, folder: Path) -> str:
    """The entry's first cover copied into the site (path relative to the site root), else a drawn one."""
    for name in entry.covers or []:
        src = _inside(entry, str(name))
        if src is not None and src.is_file():
            target = folder / f"{slug}{src.suffix.lower()}"
            shutil.copyfile(src, target)
            return f"covers/{target.name}"
    target = folder / f"{slug}.svg"
    target.write_text(_schematic(entry))
    return f"covers/{target.name}"


def _inside(entry: Entry, name: str) -> Path | None:
    """`name` in the entry's folder, or None when it points outside it (never copied into a site)."""
    if entry.source is None:
        return None
    folder = entry.source.parent.resolve()
    path = (folder / name).resolve()
    return path if folder in path.parents else None


def _url(url: str | None) -> str | None:
    return url if url and url.startswith(("https://", "http://")) else None


def _schematic(entry: Entry) -> str:
    """An SVG drawing of the entry: input channels -> network -> output channels (not a result)."""
    ins, outs = entry.inputs[0].channel_names, entry.outputs[0].channel_names

    def column(x: int, names: list[str], fill: str) -> str:
        names = names[:5]
        step = 150 / max(len(names), 1)
        return "".join(f'<rect x="{x}" y="{30 + i * step:.0f}" width="110" height="{step - 8:.0f}" rx="6" '
                       f'fill="{fill}"/><text x="{x + 55}" y="{30 + i * step + step / 2:.0f}" '
                       f'text-anchor="middle" font-size="13">{_e(n[:16])}</text>' for i, n in enumerate(names))

    return ('<svg xmlns="http://www.w3.org/2000/svg" width="500" height="210" viewBox="0 0 500 210" '
            'font-family="sans-serif"><rect width="500" height="210" fill="#eef2f7"/>'
            f'{column(20, list(ins), "#cfe3ff")}'
            '<path d="M140 105 L180 105" stroke="#1d3557" stroke-width="3"/>'
            '<rect x="185" y="70" width="130" height="70" rx="8" fill="#1d3557"/>'
            f'<text x="250" y="100" fill="white" text-anchor="middle" font-size="14">{_e(entry.mmv.network.kind)}'
            f'</text><text x="250" y="120" fill="white" text-anchor="middle" font-size="12">'
            f'{entry.spatial_dims}D {_e(entry.mmv.framework)}</text>'
            '<path d="M320 105 L360 105" stroke="#1d3557" stroke-width="3"/>'
            f'{column(370, list(outs), "#d8f0dc")}'
            '<text x="250" y="200" text-anchor="middle" font-size="11" fill="#5b6770">schematic: no trained '
            'weights shown</text></svg>')


def _package(entry: Entry, slug: str, folder: Path) -> str | None:
    """A download link for the entry's weights: a bundled package copied into the site, or its URL/DOI."""
    pre = entry.mmv.pretrained
    if pre is None:
        return None
    from ..remote.pretrained import is_doi

    if is_doi(pre.source):
        return f"https://doi.org/{pre.source.removeprefix('doi:')}"
    if "://" in pre.source:
        return pre.source if pre.source.startswith(("https://", "http://")) else None
    src = _inside(entry, pre.source)
    if src is None or not src.is_file():
        return None
    target = folder / f"{slug}{src.suffix}"
    shutil.copyfile(src, target)
    return f"packages/{target.name}"


def _tags(entry: Entry, weights: str) -> str:
    tags = [entry.mmv.task, f"{entry.spatial_dims}D", entry.mmv.framework]
    out = "".join(f'<span class="tag">{_e(t)}</span>' for t in tags)
    if weights != "train first":
        out += f'<span class="tag weights">weights: {_e(weights)}</span>'
    return out


def _card(entry: Entry, row: Any, cover: str) -> str:
    return (f'<div class="card" data-task="{_e(row.task)}" data-dims="{_e(row.dims)}" '
            f'data-framework="{_e(row.framework)}"><a href="entries/{_e(row.entry)}.html">'
            f'<img src="{_e(cover)}" alt="cover of {_e(row.entry)}" loading="lazy">'
            f'<div class="text"><h2>{_e(row.entry)}</h2><div>{_e(entry.name)}</div>'
            f'{_tags(entry, row.weights)}</div></a></div>')


def _select(name: str, label: str, values: list[str]) -> str:
    options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
    return f'<label>{label} <select name="{name}"><option value="">all</option>{options}</select></label>'


def _index(cards: list[str], rows: list[Any], zoo: Path) -> str:
    tasks = sorted({r.task for r in rows})
    dims = sorted({r.dims for r in rows})
    frameworks = sorted({r.framework for r in rows})
    with_weights = sum(r.weights != "train first" for r in rows)
    title = "mmv_zoo model zoo" if zoo == ZOO_DIR else f"{zoo.name}: an mmv_zoo zoo"
    return _page(title, f"""
<header><h1>{_e(title)}</h1><div>{len(rows)} entries, {with_weights} with weights &middot;
made by <code>mmv-zoo gallery</code></div></header>
<main>
<div class="filters">{_select("task", "task", tasks)}{_select("dims", "dimensions", dims)}
{_select("framework", "framework", frameworks)}
<label>search <input id="search" type="search" placeholder="name or words"></label>
<span id="count" class="note">{len(rows)} shown</span></div>
<div class="cards">{"".join(cards)}</div>
</main>{FILTER_SCRIPT}""", root="")


def _entry_page(entry: Entry, slug: str, cover: str, package: str | None) -> str:
    mmv = entry.mmv
    ins, outs = entry.inputs[0], entry.outputs[0]
    facts = [("task", mmv.task), ("framework", mmv.framework),
             ("network", f"{mmv.network.kind}, {entry.spatial_dims}D, patch {mmv.data.patch}"),
             ("input", f"{ins.id}: {', '.join(ins.channel_names)}"),
             ("output", f"{outs.id}: {', '.join(outs.channel_names)}"),
             ("normalization", f"source {mmv.data.normalization.source.kind}, "
                               f"target {mmv.data.normalization.target.kind}"),
             ("license", entry.license), ("weights", weights_label(entry))]
    rows = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in facts)
    cites = "".join(f"<li>{_e(c.text)}" + (f' <a href="https://doi.org/{_e(c.doi)}">doi:{_e(c.doi)}</a>' if c.doi
                                           else f' <a href="{_e(_url(c.url))}">{_e(c.url)}</a>' if _url(c.url)
                                           else f" {_e(c.url)}" if c.url else "")
                    + "</li>" for c in entry.cite)
    metrics = []
    if mmv.paper is not None:
        value = "not reported" if mmv.paper.value is None else f"{mmv.paper.value:g}"
        metrics.append((f"paper: {mmv.paper.metric}", value, mmv.paper.note or ""))
    pre = mmv.pretrained
    if pre is not None:
        metrics += [(k, f"{v:g}", "these weights") for k, v in pre.metrics.items()]
    metric_html = ("<table><tr><th>metric</th><th>value</th><th>from</th></tr>" + "".join(
        f"<tr><td>{_e(k)}</td><td>{_e(v)}</td><td class='note'>{_e(n)}</td></tr>" for k, v, n in metrics)
        + "</table>") if metrics else "<p class='note'>No metrics recorded yet: train the entry, then " \
                                      "<code>mmv-zoo evaluate</code> scores the run.</p>"
    if pre is not None and pre.trained_on:
        metric_html += f"<p class='note'>These weights: {_e(pre.trained_on)}</p>"
    bundled = bundled_data(entry)
    data = bundled[0] if bundled else "DATA"
    commands = []
    if pre is not None:
        commands.append(f"mmv-zoo predict {slug} IMAGES --out predictions/")
    if mmv.recipe is not None:
        commands.append(f"mmv-zoo data pull {slug} --out data/{slug}")
        data = f"data/{slug}"
    commands += [f"mmv-zoo train {slug} --data {data} --out runs",
                 f"mmv-zoo export runs/{slug}/<run> --out {slug}.zip",
                 f"mmv-zoo predict runs/{slug}/<run> IMAGES --out predictions/"]
    download = (f'<p><a href="{_e(package if package.startswith("http") else "../" + package)}">Download the '
                f'BioImage.IO package</a>' + (f' <span class="note">sha256 {_e(pre.sha256)}</span>' if pre and
                                              pre.sha256 else "") + "</p>") if package else ""
    described = (entry.training_data or {}).get("description")
    data_html = f"<p>{_e(' '.join(str(described).split()))}</p>" if described else ""
    return _page(f"{slug} · mmv_zoo", f"""
<header><a href="../index.html">&larr; all entries</a><h1>{_e(slug)}: {_e(entry.name)}</h1>
{_tags(entry, weights_label(entry))}</header>
<main>
<img class="cover" src="../{_e(cover)}" alt="cover of {_e(slug)}">
<p>{_e(" ".join(entry.description.split()))}</p>
<table>{rows}</table>
<h2>Metrics</h2>{metric_html}
<h2>Use it</h2><pre>{_e(chr(10).join(commands))}</pre>{download}
<h2>Data</h2>{data_html or "<p class='note'>See the entry's README.</p>"}
<h2>Citations</h2><ul>{cites}</ul>
</main>""", root="../")


def _page(title: str, body: str, root: str) -> str:
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<link rel="stylesheet" href="{root}style.css"></head>\n<body>{body}{COVER_CHECK}</body></html>\n')
