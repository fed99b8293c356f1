"""`mmv-zoo gallery`: a static site of the zoo whose every page renders with its cover in a real
browser (headless Chromium) and whose every local link resolves."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import pytest

from mmv_zoo.catalog.gallery import build_gallery
from mmv_zoo.catalog.listing import catalog
from mmv_zoo.errors import EntryError, OutputError

from .test_cli import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


class Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "link" and a.get("href"):
            self.links.append(str(a["href"]))
        if tag == "img" and a.get("src"):
            self.images.append(str(a["src"]))


def _parse(page: Path) -> Links:
    parser = Links()
    parser.feed(page.read_text())
    return parser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return build_gallery(tmp_path_factory.mktemp("gallery") / "site").index.parent


def test_every_entry_has_a_page_with_a_cover_and_no_broken_link(site):
    slugs = [r.entry for r in catalog()]
    pages = sorted((site / "entries").glob("*.html"))
    assert [p.stem for p in pages] == sorted(slugs)
    index = _parse(site / "index.html")
    assert {f"entries/{s}.html" for s in slugs} <= set(index.links)
    assert len(index.images) == len(slugs)
    for page in [site / "index.html", *pages]:
        parsed = _parse(page)
        for ref in parsed.links + parsed.images:
            url = urlparse(ref)
            if url.scheme in ("http", "https"):
                assert url.netloc, (page.name, ref)
                continue
            assert not url.scheme and not ref.startswith("/"), (page.name, ref)  # relative: any static host
            assert (page.parent / url.path).resolve().is_file(), (page.name, ref)
    nuclei = (site / "entries" / "nuclei_semseg_2d.html").read_text()
    assert "0.9842" in nuclei and 'href="../packages/nuclei_semseg_2d.zip"' in nuclei
    assert "mmv-zoo predict nuclei_semseg_2d IMAGES" in nuclei and "doi.org/10.1093/gigascience/giad120" in nuclei
    assert (site / "packages" / "nuclei_semseg_2d.zip").stat().st_size == (
        Path(__file__).parents[1] / "mmv_zoo/zoo/nuclei_semseg_2d/weights/nuclei_semseg_2d.zip").stat().st_size
    planaria = (site / "entries" / "denoise_3d_planaria.html").read_text()
    assert "paper: " in planaria and "doi.org/" in planaria  # the paper's figure; weights on Zenodo
    assert "schematic" in (site / "covers" / "labelfree_3d_fnet.svg").read_text()


def _chromium(*args: str) -> str:
    done = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
                          capture_output=True, text=True, timeout=120)
    return done.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here (apt-get install chromium; .ci/run does)")
def test_pages_render_with_their_covers_in_chromium(site):
    pages = [site / "index.html", *sorted((site / "entries").glob("*.html"))]
    for page in pages:
        dom = _chromium("--virtual-time-budget=5000", "--dump-dom", page.as_uri())
        state = re.search(r'data-images="([^"]*)"', dom)
        assert state is not None, f"{page.name}: did not render"
        assert state.group(1).startswith("loaded"), f"{page.name}: {state.group(1)}"  # every <img> decoded
        assert int(state.group(1).split()[1]) >= 1
    shots = os.environ.get("MMV_ZOO_SCREENSHOTS")
    if shots:  # make screenshots: the README's pictures, from the real browser
        Path(shots).mkdir(parents=True, exist_ok=True)
        for name, page, size in (("gallery_index.png", site / "index.html", "1280,900"),
                                 ("gallery_entry.png", site / "entries" / "nuclei_semseg_2d.html", "1100,1250")):
            _chromium(f"--window-size={size}", f"--screenshot={Path(shots).resolve() / name}", page.as_uri())
            assert (Path(shots) / name).stat().st_size > 10_000


def test_a_labs_own_zoo_and_bad_targets(tmp_path, capsys):
    code, _, _ = run_cli(["new", "my_nuclei", "--from", "nuclei_semseg_2d", "--zoo", str(tmp_path / "zoo")], capsys)
    assert code == 0
    code, out, _ = run_cli(["gallery", "--out", str(tmp_path / "site"), "--zoo", str(tmp_path / "zoo")], capsys)
    assert code == 0 and "1 entry pages" in out
    assert [p.stem for p in (tmp_path / "site" / "entries").iterdir()] == ["my_nuclei"]
    code, _, err = run_cli(["gallery", "--out", str(tmp_path / "site"), "--zoo", str(tmp_path / "zoo")], capsys)
    assert code == 1 and "not empty" in err and (tmp_path / "site" / "index.html").is_file()  # kept
    with pytest.raises(OutputError, match="outside the zoo"):
        build_gallery(tmp_path / "zoo" / "site", zoo=tmp_path / "zoo")
    rdf = tmp_path / "zoo" / "my_nuclei" / "rdf.yaml"
    (tmp_path / "secret.png").write_bytes(b"not for the web")
    rdf.write_text(rdf.read_text().replace("type: model", "covers: [../../secret.png]\ntype: model", 1))
    build_gallery(tmp_path / "site2", zoo=tmp_path / "zoo")
    assert [p.suffix for p in (tmp_path / "site2" / "covers").iterdir()] == [".svg"]  # drawn, nothing copied
    with pytest.raises(EntryError, match="not a zoo"):
        build_gallery(tmp_path / "other", zoo=tmp_path / "site")
    with pytest.raises(OutputError, match="not empty"):
        build_gallery(tmp_path / "site", zoo=tmp_path / "zoo")
    assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".*partial"))
