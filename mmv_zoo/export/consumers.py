"""What viewers that run TorchScript only ask of a package, read from its rdf.yaml: QuPath's and
deepImageJ's model runners take one input and one output with batch, channel and 2D or 3D space
axes, and run the `torchscript` weights, which must load with `torch.jit.load` alone (the
independent checker loads them so in a process that cannot import mmv_zoo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONSUMERS = ("QuPath", "deepImageJ")


def _axes_problem(tensor: dict[str, Any], what: str) -> str | None:
    types = [a.get("type") for a in tensor.get("axes", [])]
    space = [a.get("id") for a in tensor.get("axes", []) if a.get("type") == "space"]
    if types[:2] != ["batch", "channel"] or len(types) != 2 + len(space) or space not in (["y", "x"], ["z", "y", "x"]):
        return f"{what} axes {types} (space {space}): not batch, channel, then y, x or z, y, x"
    return None


def unmet(rdf: dict[str, Any]) -> list[str]:
    """Why a package cannot run in QuPath and deepImageJ ([] when it can)."""
    problems = []
    ins, outs = rdf.get("inputs", []), rdf.get("outputs", [])
    if len(ins) != 1 or len(outs) != 1:
        problems.append(f"{len(ins)} input(s) and {len(outs)} output(s); they run one of each")
    if (rdf.get("weights") or {}).get("torchscript") is None:
        problems.append("no torchscript weights (they run TorchScript only)")
    for what, tensors in (("input", ins), ("output", outs)):
        problems += [p for p in (_axes_problem(t, what) for t in tensors[:1]) if p]
    return problems


def package_unmet(path: Path) -> list[str]:
    """`unmet` for a package .zip or an rdf.yaml."""
    from ..predict.verified_package import PackageFiles

    files = PackageFiles.of(Path(path))
    rdf = files.rdf() if files is not None else None
    if rdf is None:
        return [f"{path}: no readable rdf.yaml"]
    return unmet(rdf)
