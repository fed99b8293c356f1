"""`mmv-zoo plan ... --search K`: K variants of a planned entry trained briefly with k-fold
cross-validation; the best one is kept.

The candidates are the plan itself and, in this order, the plan with half the in-plane patch (and a
batch four times larger, within the same voxels per step), with one network level fewer, with a
learning rate a third as large, and (segmentation, instances) with half the patches centred on
foreground. Each is trained `steps` optimizer steps on every fold's training images and scored by
`mmv-zoo evaluate` on that fold's held-out images (segmentation: foreground F1 of the first class;
instances: AP50; regression and denoising against references: Pearson); the mean over folds decides.
Folds are made of whole images, assigned in turn after sorting by name; the data must be a paired
folder layout (sources and targets in two folders), whose files are linked, not copied.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataError

SEARCH_STEPS = 100
METRICS = {"segmentation": "f1_", "instance": "ap50", "regression": "pearson"}


@dataclass
class Candidate:
    name: str
    change: str
    """What differs from the plan, as a sentence."""
    mmv: dict[str, Any]
    scores: list[float]

    @property
    def score(self) -> float:
        return sum(self.scores) / len(self.scores) if self.scores else float("nan")


def candidates(mmv: dict[str, Any], task: str, k: int) -> list[Candidate]:
    """The plan and up to k - 1 variants of it (see the module doc)."""
    out = [Candidate("planned", "as planned", copy.deepcopy(mmv), [])]
    patch = list(mmv["data"]["patch"])
    batch = int(mmv["training"]["batch_size"])
    half = [*patch[:-2], *(max(16, p // 2) for p in patch[-2:])]
    if half != patch:
        v = copy.deepcopy(mmv)
        v["data"]["patch"], v["training"]["batch_size"] = half, min(64, batch * 4)
        if v["training"].get("max_epochs"):  # as many optimizer steps as the plan
            v["training"]["max_epochs"] = int(v["training"]["max_epochs"]) * v["training"]["batch_size"] // batch
        out.append(Candidate("half patch", f"patch {half}, batch {v['training']['batch_size']}", v, []))
    net = mmv["network"]
    fewer = copy.deepcopy(mmv)
    if "depth" in net and int(net["depth"]) > 1:
        fewer["network"]["depth"] = int(net["depth"]) - 1
        out.append(Candidate("fewer levels", f"network depth {fewer['network']['depth']}", fewer, []))
    elif isinstance(net.get("channels"), list) and len(net["channels"]) > 2:
        fewer["network"]["channels"] = net["channels"][:-1]
        fewer["network"]["strides"] = net["strides"][:-1]
        out.append(Candidate("fewer levels", f"network channels {fewer['network']['channels']}", fewer, []))
    lr = mmv.get("training", {}).get("optimizer", {}).get("lr")
    if lr:
        v = copy.deepcopy(mmv)
        v["training"]["optimizer"]["lr"] = round(float(lr) / 3, 8)
        out.append(Candidate("lower lr", f"learning rate {v['training']['optimizer']['lr']:g}", v, []))
    if task in ("segmentation", "instance") and mmv["data"].get("sampling", {}).get("foreground_fraction", 0) == 0:
        v = copy.deepcopy(mmv)
        v["data"].setdefault("sampling", {})["foreground_fraction"] = 0.5
        out.append(Candidate("foreground patches", "half the patches centred on foreground", v, []))
    return out[:k]


def folds(data: Path, layout: Any, k: int, work: Path) -> list[tuple[Path, Path]]:
    """(train folder, held-out folder) per fold, made of links to the images of `data`."""
    if getattr(layout, "layout", None) != "paired_folders":
        raise DataError(f"{data}: --search needs paired folders (sources and targets); this layout is "
                        f"{getattr(layout, 'layout', '?')}")
    from ..data.pairs import find_pairs

    pairs, _ = find_pairs(data, layout, 3)
    pairs = sorted(pairs, key=lambda p: p.source.name)
    if len(pairs) < 2:
        raise DataError(f"{data}: --search needs at least 2 images for cross-validation, found {len(pairs)}")
    k = max(2, min(k, len(pairs)))
    out = []
    for f in range(k):
        roots = (work / f"fold{f}" / "train", work / f"fold{f}" / "held_out")
        for i, pair in enumerate(pairs):
            root = roots[1] if i % k == f else roots[0]
            for folder, path in ((layout.source, pair.source), (layout.target, pair.target)):
                (root / folder).mkdir(parents=True, exist_ok=True)
                (root / folder / path.name).symlink_to(path.resolve())
        out.append(roots)
    return out


def run_search(doc: dict[str, Any], task: str, data: Path, layout: Any, k: int, n_folds: int = 3,
               steps: int = SEARCH_STEPS, on_result: Callable[[str, float], None] | None = None) -> list[Candidate]:
    """Train and score every candidate of `doc`'s config.mmv_zoo on every fold; best first."""
    from ..entry import validate_entry_data
    from ..evaluate.scoring import evaluate
    from ..training.train import train

    if task == "denoise":
        raise DataError("--search: denoising has no held-out reference to score folds against")
    work = Path(tempfile.mkdtemp(prefix="mmv_zoo_search_"))
    try:
        splits = folds(data, layout, n_folds, work / "data")
        found = candidates(doc["config"]["mmv_zoo"], task, k)
        for cand in found:
            entry_doc = copy.deepcopy(doc)
            entry_doc["config"]["mmv_zoo"] = copy.deepcopy(cand.mmv)
            training = entry_doc["config"]["mmv_zoo"].setdefault("training", {})
            training.update(max_steps=steps, max_epochs=10**6, num_workers=0)
            training.pop("max_time", None)
            for i, (train_dir, held_out) in enumerate(splits):
                entry = validate_entry_data(entry_doc, f"--search candidate {cand.name}")
                run = train(entry, train_dir, work / "runs" / f"{cand.name}_{i}".replace(" ", "_"), progress=False)
                result = evaluate(run.folder, held_out, work / "eval" / f"{cand.name}_{i}".replace(" ", "_"))
                prefix = METRICS[task]
                key = next(c for c in result.columns if c.startswith(prefix))
                value = result.summary["mean"][key]
                cand.scores.append(value if math.isfinite(value) else 0.0)
            if on_result is not None:
                on_result(cand.name, cand.score)
        return sorted(found, key=lambda c: -c.score)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def changed_paths(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted paths where the nested dicts `a` and `b` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [p for k in dict.fromkeys([*a, *b]) for p in changed_paths(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def table(ranked: list[Candidate], task: str, steps: int) -> str:
    """The comparison as a markdown table for the entry's README."""
    metric = {"segmentation": "foreground F1", "instance": "AP50", "regression": "Pearson"}[task]
    rows = "\n".join(f"| {c.name} | {c.change} | {', '.join(f'{s:.4f}' for s in c.scores)} | "
                      + (f"**{c.score:.4f}** (kept)" if i == 0 else f"{c.score:.4f}") + " |"
                      for i, c in enumerate(ranked))
    return (f"`--search {len(ranked)}`: each candidate trained {steps} steps per fold, scored ({metric}) on the "
            f"fold's held-out images; the best is kept.\n\n| candidate | change | per fold | mean |\n"
            f"|---|---|---|---|\n{rows}\n")
