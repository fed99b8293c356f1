"""Every bundled zoo entry, trained for a few steps, exports a package that the independent checker passes.

    python scripts/check_zoo_exports.py [--checker PATH] [--entries a,b] [--keep DIR] [--all] [--cores ...]

For each entry: tiny synthetic training data in the entry's layout and axes and a tiny training run
(small network, small discriminator for the GAN frameworks; both from `mmv_zoo.testing`, which
tests/test_zoo_entries.py shares), an export with all three weight formats (torchscript, onnx,
pytorch_state_dict; a CycleGAN run: one package per direction; an instance run: its labels package,
TorchScript only), then the checker
(`../shared/tools/check_bioimageio_package.sh` by default; `MMV_ZOO_CHECKER` or `--checker`
overrides) with the input image for its tiled-prediction step, under the newest bioimageio.core and
under bioimageio.core 0.9.6 (`--cores`; the checker's CHECK_CORE, each in its own environment,
without mmv_zoo or MONAI), as consumers pinned one release behind run it. Exit status 1 if any
entry fails.

Then the packages shipped as entries' pretrained weights are checked the same way, as they are.

Entries that would export the same package (equal framework, task, network, loss, normalization,
patch and axes once the tiny overrides are applied: e.g. the four labelfree_3d_<structure> entries,
which differ in their data only) are checked once, for the first of them; `--all` checks each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKER = ROOT.parent / "shared" / "tools" / "check_bioimageio_package.sh"
FORMATS = "torchscript,onnx,pytorch_state_dict"


INSTANCE_OVERRIDES = {"instance": ["embedseg.seed_threshold=0.01", "embedseg.foreground_threshold=0.01",
                                    "embedseg.min_size=4"]}
"""A run of a few steps has seeds near 0.5, below any useful threshold: with these every pixel seeds,
so the labels package's test output (the compiled clustering at work) is not empty."""

NEWEST = "newest"
OLDEST = "bioimageio.core==0.9.6"
"""The oldest bioimageio.core 0.9 release that reads the packages' format (consumers such as ilastik
pin older releases in their own environments)."""


def check(name: str, checker: Path, work: Path, cores: tuple[str, ...] = (NEWEST,)) -> tuple[bool, str]:
    from mmv_zoo.entry import load_entry
    from mmv_zoo.export import ExportError
    from mmv_zoo.export.package import export_package
    from mmv_zoo.testing import first_image, tiny_data, tiny_overrides
    from mmv_zoo.training.train import train

    entry = load_entry(name, tiny_overrides(load_entry(name)) + INSTANCE_OVERRIDES.get(load_entry(name).mmv.task, []))
    data, image = tiny_data(entry, work / "data")
    run = train(entry, data, work / "runs", progress=False).folder
    targets = [(None, image)]
    if entry.mmv.framework == "cyclegan":  # one package per direction; b2a takes the target domain's images
        targets = [("a2b", image), ("b2a", first_image(data / entry.mmv.data.layout.target))]
    ok, last = True, ""
    for direction, inp in targets:
        suffix = f"_{direction}" if direction else ""
        formats = ("torchscript",) if entry.mmv.task == "instance" else tuple(FORMATS.split(","))  # labels
        note = ""
        try:
            package = export_package(run, work / f"{name}{suffix}.zip", formats=formats, direction=direction)
        except ExportError as e:
            if "--no-class-labels" not in str(e):
                raise
            # a run of a few steps may see only background in the crop: its class labels would be all 0,
            # which BioImage.IO refuses as a test tensor; the probabilities are checked alone then
            package = export_package(run, work / f"{name}{suffix}.zip", formats=formats, direction=direction,
                                     class_labels=False)
            note = "(class labels left out: the tiny run sees background only) "
        np.save(work / f"input{suffix}.npy", inp)
        ok, last = run_checker(checker, package.zip_path, work / f"input{suffix}.npy", cores,
                               (f"{direction}: " if direction else "") + note)
        if not ok:
            return ok, last
    return ok, last


def run_checker(checker: Path, package: Path, inp: Path | None, cores: tuple[str, ...],
                prefix: str = "") -> tuple[bool, str]:
    """The independent checker on one package under each of `cores`; (passed, its last line)."""
    from mmv_zoo.export.consumers import package_unmet

    problems = package_unmet(package)
    viewers = "QuPath/deepImageJ: " + ("yes" if not problems else "no (" + "; ".join(problems) + ")")
    ok, last = True, ""
    for core in cores:
        env = dict(os.environ)
        env.pop("CHECK_CORE", None)
        if core != NEWEST:
            env["CHECK_CORE"] = core
        proc = subprocess.run(["bash", str(checker), str(package), *([str(inp)] if inp else [])],
                              capture_output=True, text=True, env=env)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        last = prefix + f"{viewers}; [{core}] " + (lines[-1] if lines else proc.stderr.strip()[-300:])
        if proc.returncode != 0:
            print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n")
        ok = ok and proc.returncode == 0 and "package OK" in last
        if not ok:
            return ok, last
    return ok, last


def shipped_packages() -> list[tuple[str, Path]]:
    """(entry, package) of every bundled entry whose pretrained weights are a package in the wheel."""
    from mmv_zoo.entry import bundled_entries, load_entry

    out = []
    for name in bundled_entries():
        entry = load_entry(name)
        pre = entry.mmv.pretrained
        if pre is not None and pre.format == "bioimageio" and "://" not in pre.source and entry.source is not None:
            path = entry.source.parent / pre.source
            if path.is_file():
                out.append((name, path))
    return out


def export_signature(name: str) -> str:
    """What decides an entry's tiny package: its settings without data source, training, weights and
    paper fields, and its axes without names."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.testing import tiny_overrides

    entry = load_entry(name, tiny_overrides(load_entry(name)))
    mmv = entry.mmv.model_dump(mode="json", exclude={"recipe", "paper", "pretrained", "training"})
    mmv["data"] = {k: mmv["data"][k] for k in ("patch", "normalization", "labels")}
    axes = [[(a.type, getattr(a, "id", None), getattr(a, "scale", None), len(getattr(a, "channel_names", [])))
             for a in t.axes] for t in (*entry.inputs, *entry.outputs)]
    return json.dumps([mmv, axes], sort_keys=True)


def main() -> int:
    from mmv_zoo.entry import bundled_entries, load_entry

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checker", type=Path, default=Path(os.environ.get("MMV_ZOO_CHECKER", DEFAULT_CHECKER)))
    parser.add_argument("--entries", default="", help="comma-separated entry names (default: all bundled)")
    parser.add_argument("--keep", type=Path, help="keep runs and packages in this folder")
    parser.add_argument("--all", action="store_true", help="also check entries whose package equals an earlier one's")
    parser.add_argument("--cores", default=f"{NEWEST},{OLDEST}",
                        help=f"bioimageio.core releases to check under, comma-separated ({NEWEST}: the newest "
                             f"release; default: {NEWEST},{OLDEST})")
    args = parser.parse_args()
    if not args.checker.is_file():
        print(f"error: {args.checker}: checker not found (set MMV_ZOO_CHECKER or --checker)", file=sys.stderr)
        return 1
    names = [n for n in args.entries.split(",") if n] or bundled_entries()
    failed, skipped, same = [], [], {}
    seen: dict[str, str] = {}
    for name in names:
        if load_entry(name).mmv.data.normalization.source.kind == "macenko":  # export refuses it by design
            print(f"{name:28s} SKIPPED  macenko stain normalization has no BioImage.IO preprocessing", flush=True)
            skipped.append(name)
            continue
        signature = export_signature(name)
        if signature in seen and not args.all:
            print(f"{name:28s} SAME     its tiny package equals {seen[signature]}'s (checked above)", flush=True)
            same[name] = seen[signature]
            continue
        seen.setdefault(signature, name)
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix=f"mmv_zoo_check_{name}_") as tmp:
            work = args.keep / name if args.keep else Path(tmp)
            work.mkdir(parents=True, exist_ok=True)
            try:
                ok, last = check(name, args.checker, work, tuple(c for c in args.cores.split(",") if c))
            except Exception as e:  # noqa: BLE001 - one entry's failure must not hide the others'
                ok, last = False, f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
        print(f"{name:28s} {'OK    ' if ok else 'FAILED'} {time.perf_counter() - t0:6.1f} s   {last}", flush=True)
        if not ok:
            failed.append(name)
    cores = tuple(c for c in args.cores.split(",") if c)
    shipped_failed = []
    for name, package in shipped_packages() if not args.entries else []:  # the trained weights users get
        t0 = time.perf_counter()
        ok, last = run_checker(args.checker, package, None, cores)
        print(f"{'shipped ' + name:28s} {'OK    ' if ok else 'FAILED'} {time.perf_counter() - t0:6.1f} s   {last}",
              flush=True)
        if not ok:
            shipped_failed.append(name)
    checked = len(names) - len(skipped) - len(same)
    print(f"{checked - len(failed)}/{checked} zoo entries export packages the checker passes"
          + (f" ({len(same)} more export the same package as one of them)" if same else "")
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; not exportable (macenko): {', '.join(skipped)}" if skipped else ""))
    if shipped_failed:
        print(f"shipped packages failing the checker: {', '.join(shipped_failed)}")
    return 1 if failed or shipped_failed else 0


if __name__ == "__main__":
    sys.exit(main())
