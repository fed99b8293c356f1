"""Packages older consumers can open: the rdf.yaml rewritten so that bioimageio.spec 0.5.7
(bioimageio.core 0.9.6, as pinned by consumer environments such as ilastik's) reads it as well as
the current release does.

The current spec writes `covers` and `documentation` as file objects with a sha256 and states
`weights.pytorch_state_dict.strict`; spec 0.5.7 knows neither (it takes plain relative paths and has
no `strict`, whose default, true, is what we state). `format_version` becomes the lowest 0.5 version
that has every field we write, 0.5.4, which the current spec reads (and upgrades) too.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import yaml

FORMAT_VERSION = "0.5.4"
RDF = "rdf.yaml"


def compatible_rdf(rdf: dict[str, Any]) -> dict[str, Any]:
    """The description with the fields older specs cannot read written the way they can."""
    out = dict(rdf)
    out["format_version"] = FORMAT_VERSION
    if isinstance(out.get("documentation"), dict):
        out["documentation"] = out["documentation"]["source"]
    if out.get("covers"):
        out["covers"] = [c["source"] if isinstance(c, dict) else c for c in out["covers"]]
    weights = dict(out.get("weights") or {})
    state = weights.get("pytorch_state_dict")
    if isinstance(state, dict) and state.get("strict", True) is True:
        weights["pytorch_state_dict"] = {k: v for k, v in state.items() if k != "strict"}
    out["weights"] = weights
    return out


def rewrite_package(path: Path) -> None:
    """Rewrite the rdf.yaml of the package zip `path` in place (every other member copied as is)."""
    tmp = path.with_name(path.name + ".compat")
    with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == RDF:
                rdf = compatible_rdf(yaml.safe_load(data))
                data = yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True, width=100).encode()
            dst.writestr(info, data)
    tmp.replace(path)
