"""Prediction speed and memory: the network's own floor, MONAI's sliding window and mmv_zoo's engine on
the same network (random weights) and the same volumes, in one run.

    .venv/bin/python bench/predict_bench.py            # fnet depth 3 x16 (1.4 M parameters), 1x32x256x256
                                                       # and 1x64x512x512, memory test with fnet depth 2 x8:
                                                       # about 20 min on the 2-core machine at load ~3.5
    .venv/bin/python bench/predict_bench.py --quick    # same network, 1x32x256x256 and 1x32x256x512, 2 rounds,
                                                       # no torch.compile (~10 min)
    .venv/bin/python bench/predict_bench.py --network fnet3d --large 64,1024,1024
                                                       # the paper's fnet-3D (23 M parameters) at the issue's
                                                       # full size: hours on 2 CPU cores

Prints, per volume: the floor (voxels / the network's best throughput on inputs that fit the tile
budget), MONAI `sliding_window_inference` (25% overlap, gaussian, roi = our tile clipped to the
image), `predict_array` (in memory) and `predict_files` (OME-TIFF or OME-Zarr in, OME-Zarr out),
each as seconds, `ratio` to the floor (DESIGN.md target for ours: <= 1.3) and GFLOP/s (useful
FLOPs: network FLOPs per voxel x image voxels) against the measured float32 matmul peak. Then
cheap ways to speed the network up on CPU, and the peak RSS of predicting a (T=2, C=1, Z, Y, X)
OME-Zarr image and one 8x larger in fresh processes (target: < 20% growth). Wall times are medians;
the load average is printed because the machine may be shared. Never asserts timings.
"""

from __future__ import annotations

import argparse
import copy
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NETWORKS = {
    "fnet3d": [],  # labelfree_3d_fnet as shipped: fnet depth 4, mult_chan 32 (the paper's fnet-3D)
    "small": ["network.depth=3", "network.mult_chan=16"],
    "tiny": ["network.depth=2", "network.mult_chan=8"],
}


def shape_arg(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in re.split(r"[,x]", text))


def fmt_shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(s) for s in shape)


def load(network: str, extra: list[str]) -> tuple[Any, Any]:
    """(entry, FCN model with random weights, eval mode) for labelfree_3d_fnet with a network preset."""
    import torch

    from mmv_zoo.entry import load_entry
    from mmv_zoo.frameworks.fcn import FCN

    entry = load_entry("labelfree_3d_fnet", NETWORKS[network] + extra)
    torch.manual_seed(0)
    return entry, FCN(entry.model_dump(mode="json")).eval()


def median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_peak(repeat: int, n: int = 4096) -> float:
    """float32 GFLOP/s of a large torch.mm (median)."""
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: torch.mm(a, b), max(3, repeat)) / 1e9


def flops_per_voxel(net: Any, shape: tuple[int, ...]) -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 1, *shape)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        net(x)
    return counter.get_total_flops() / x.numel()


def forward_time(net: Any, shape: tuple[int, ...], repeat: int, warmup: int = 1, fmt: Any = None) -> float:
    """Median seconds of one forward pass (inference mode) on a 1x1x`shape` input in memory format `fmt`."""
    import torch

    x = torch.randn(1, 1, *shape).contiguous(memory_format=fmt or torch.contiguous_format)
    with torch.inference_mode():
        return median_time(lambda: net(x), repeat, warmup)


def engine_forms(net: Any) -> dict[str, tuple[Any, Any]]:
    """{label: (network, input memory format)}: eager, and the form predict_array runs (when the engine
    has `cpu_inference`, the folded channels-last copy)."""
    import torch

    forms = {"eager": (net, torch.contiguous_format)}
    try:
        from mmv_zoo.predict.fast import cpu_inference
    except ImportError:
        return forms
    forms["engine's cpu_inference"] = cpu_inference(net, 3, (1, 1, 16, 16, 16))
    return forms


def write_image(path: Path, data: Any) -> Path:
    """A (T, C, Z, Y, X) array as OME-TIFF or OME-Zarr (by suffix), through mmv_zoo's writers."""
    from mmv_zoo.io.writers import open_writer

    with open_writer(path, data.shape, data.dtype, overwrite=True,
                     pixel_sizes={"z": 0.29, "y": 0.108, "x": 0.108}, channel_names=["brightfield"]) as w:
        for t in range(data.shape[0]):
            w.region(t)[...] = data[t]
    return path


def save_checkpoint(model: Any, path: Path) -> Path:
    """A checkpoint `load_model` accepts (the entry in hyper_parameters, the state dict), so predict_files
    runs the same random-weight network as the in-memory methods."""
    import torch

    torch.save({"hyper_parameters": dict(model.hparams), "state_dict": model.state_dict()}, path)
    return path


class Counted:
    """A network that counts the windows it is given (MONAI's work)."""

    def __init__(self, net: Any) -> None:
        self.net, self.windows = net, 0

    def __call__(self, x: Any) -> Any:
        self.windows += x.shape[0]
        return self.net(x)


def volume_rows(args: argparse.Namespace, entry: Any, model: Any, net: Any, shape: tuple[int, ...], fpv: float,
                shapes: list[tuple[int, ...]], ckpt: Path, work: Path) -> None:
    """Floor, MONAI, predict_array and predict_files on one 1xZxYxX volume; prints one block.

    The matmul peak and the network's throughput on each of `shapes` (inputs within the budget), in
    each of its forms (eager, and as the engine runs it), are measured in the same rounds as the
    methods, so that a change of the machine's load between blocks does not skew the ratios. The
    floor is the best of them; MONAI runs the eager network, as a MONAI user would."""
    import math

    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from mmv_zoo.predict.batch import predict_files
    from mmv_zoo.predict.engine import Options, predict_array
    from mmv_zoo.predict.files import Selection
    from mmv_zoo.transforms.normalize import normalizer

    voxels = int(np.prod(shape))
    plan = args.plans[shape]
    rules = entry.mmv.network.size_rule(3)
    roi = tuple(min(t, r.fit_down(n)) for t, r, n in zip(plan.largest, rules, shape, strict=True))
    rng = np.random.default_rng(0)
    image = rng.integers(100, 4000, size=(1, 1, *shape), dtype=np.uint16)
    suffix = ".ome.tiff" if shape == args.small else ".ome.zarr"
    src = write_image(work / f"vol_{fmt_shape(shape)}{suffix}", image)
    x = image[0].astype(np.float32)
    opts = Options(budget=args.budget)
    counter = Counted(net)

    def monai() -> Any:
        xt = torch.from_numpy(normalizer(x, entry.mmv.data.normalization.source)(x).astype(np.float32))[None]
        with torch.inference_mode():
            return sliding_window_inference(xt, roi, 1, counter, overlap=0.25, mode="gaussian")

    def ours_array() -> Any:
        return predict_array(model, x, entry, options=opts)

    def ours_files() -> Any:
        return predict_files(ckpt, [src], work / "out", overwrite=True, options=opts,
                             selection=Selection(format="ome-zarr"))

    methods = {"MONAI sliding window 25% gaussian": monai, "mmv_zoo predict_array": ours_array,
               f"mmv_zoo predict_files {suffix[1:]}->ome.zarr": ours_files}
    times: dict[str, list[float]] = {k: [] for k in methods}
    peaks: list[float] = []
    forms = args.forms
    per_shape: dict[tuple[str, tuple[int, ...]], list[float]] = {(f, s): [] for f in forms for s in shapes}
    cold = {}
    if shape == args.small:  # first calls in the process (imports, traced plans) outside the timings
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            cold[name] = time.perf_counter() - t0
        counter.windows = 0
    load_before = fmt_load()
    for _ in range(args.runs):  # interleaved, so that a burst of load hits every method alike
        peaks.append(matmul_peak(3))
        for f, s in per_shape:
            per_shape[f, s].append(math.prod(s) / forward_time(forms[f][0], s, 1, warmup=0, fmt=forms[f][1]))
        for name, fn in methods.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    peak = statistics.median(peaks)
    rates = {s: statistics.median(r) for s, r in per_shape.items()}
    best = max(rates, key=rates.__getitem__)
    floor = voxels / rates[best]
    print(f"\nvolume 1x{fmt_shape(shape)} ({voxels / 1e6:.1f} M voxels), load {load_before} before, {fmt_load()} after")
    print(f"  float32 matmul peak (torch.mm 4096^2) {peak:.1f} GFLOP/s; network throughput, batch 1 (Mvox/s):")
    for f in forms:
        print(f"    {f:<24} " + ", ".join(f"{fmt_shape(s)} {rates[f, s] / 1e6:.3f}" for s in shapes))
    print(f"  the floor uses the best, {best[0]} on {fmt_shape(best[1])}")
    print(f"  our tiles up to {fmt_shape(plan.largest)} (core {fmt_shape(plan.core)}, halo {fmt_shape(plan.halo)}, "
          f"image borders): {len(plan)} tiles, work {plan.work:.2f} voxels processed per image voxel")
    print(f"  MONAI roi {fmt_shape(roi)}: {counter.windows // args.runs} windows, work "
          f"{counter.windows // args.runs * math.prod(roi) / voxels:.2f}")
    print(f"  {'method':<44} {'seconds':>8} {'ratio':>6} {'GFLOP/s':>8} {'% peak':>7}")
    print(f"  {'floor (voxels / best throughput)':<44} {floor:8.1f} {1:6.2f} {fpv * voxels / floor / 1e9:8.1f} "
          f"{100 * fpv * voxels / floor / 1e9 / peak:6.1f}%")
    for name, ts in times.items():
        t = statistics.median(ts)
        gf = fpv * voxels / t / 1e9
        print(f"  {name:<44} {t:8.1f} {t / floor:6.2f} {gf:8.1f} {100 * gf / peak:6.1f}%")
    if cold:
        print("  first calls in this process, untimed above (imports, tracing, plans): "
              + ", ".join(f"{name.split(' ')[0] if name.startswith('MONAI') else name.split(' ')[1]} {t:.1f} s"
                          for name, t in cold.items()))
    ours = statistics.median(times["mmv_zoo predict_array"])
    net_only = plan.work * voxels / rates[list(forms)[-1], plan.largest]
    print(f"  the network alone ({list(forms)[-1]}) on our {len(plan)} tiles: {net_only:.1f} s; "
          f"predict_array's overhead beyond it "
          f"{100 * (ours / net_only - 1):+.0f}%")
    print(f"  ratio ours/floor {ours / floor:.2f} (target <= 1.3); "
          f"MONAI/floor {statistics.median(times['MONAI sliding window 25% gaussian']) / floor:.2f}")


def fmt_load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def speedups(net: Any, shape: tuple[int, ...], repeat: int, compile_: bool, fpv: float, peak: float) -> str:
    """Cheap CPU speed-ups of the network on one tile shape; returns the printed block."""
    import torch
    from torch.fx.experimental.optimization import fuse

    x = torch.randn(1, 1, *shape)
    inputs = {"x": x, "channels_last": x.contiguous(memory_format=torch.channels_last_3d),
              "batch2": torch.cat([x, torch.randn_like(x)])}
    with torch.inference_mode():
        ref = net(x)
    folded = fuse(copy.deepcopy(net))  # eval conv+batchnorm folding (torch.fx)
    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(copy.deepcopy(net), x))
        onednn = torch.jit.optimize_for_inference(torch.jit.trace(copy.deepcopy(net), x))
    variants: dict[str, tuple[Any, str]] = {
        "eager, inference_mode": (net, "x"),
        "eager, no_grad": (net, "x"),
        "channels_last_3d": (copy.deepcopy(net).to(memory_format=torch.channels_last_3d), "channels_last"),
        "conv+bn folded (torch.fx fuse)": (folded, "x"),
        "conv+bn folded + channels_last_3d (engine)": (copy.deepcopy(folded).to(memory_format=torch.channels_last_3d),
                                                       "channels_last"),
        "torch.jit.trace + freeze": (frozen, "x"),
        "torch.jit.optimize_for_inference (oneDNN)": (onednn, "x"),
        "optimize_for_inference, batch of 2 (per tile)": (onednn, "batch2"),
        "eager, batch of 2 tiles (per tile)": (net, "batch2"),
    }
    compile_s = None
    if compile_:
        try:
            compiled = torch.compile(copy.deepcopy(net))
            t0 = time.perf_counter()
            with torch.inference_mode():
                compiled(x)
            compile_s = time.perf_counter() - t0
            variants["torch.compile (inductor)"] = (compiled, "x")
        except Exception as e:  # offline or without a compiler: say so, keep going
            variants[f"torch.compile failed: {type(e).__name__}: {str(e).splitlines()[0][:80]}"] = (None, "x")

    def call(name: str) -> Any:
        fn, key = variants[name]
        with torch.no_grad() if "no_grad" in name or key != "x" or "jit" in name else torch.inference_mode():
            return fn(inputs[key])

    errors = {}
    for name, (fn, _) in variants.items():  # warm-up, and agreement with eager
        if fn is not None:
            errors[name] = float((call(name)[:1] - ref).abs().max() / ref.abs().max())
    results: dict[str, list[float]] = {k: [] for k, (fn, _) in variants.items() if fn is not None}
    for _ in range(repeat):  # interleaved rounds, medians
        for name in results:
            t0 = time.perf_counter()
            call(name)
            results[name].append((time.perf_counter() - t0) / inputs[variants[name][1]].shape[0])
    base = statistics.median(results["eager, inference_mode"])
    lines = [f"\nnetwork speed-ups on one 1x1x{fmt_shape(shape)} tile ({repeat} interleaved rounds, medians), "
             f"load {fmt_load()}, matmul peak measured just before {peak:.1f} GFLOP/s",
             f"  {'variant':<46} {'s/tile':>7} {'speed-up':>8} {'GFLOP/s':>8} {'% peak':>7} {'max rel err':>11}"]
    for name in variants:
        if name not in results:
            lines.append(f"  {name}")
            continue
        t = statistics.median(results[name])
        gf = fpv * x.numel() / t / 1e9
        lines.append(f"  {name:<46} {t:7.2f} {base / t:7.2f}x {gf:8.1f} {100 * gf / peak:6.1f}% {errors[name]:11.1e}")
    if compile_s is not None:
        lines.append(f"  (torch.compile's first call, compiling, took {compile_s:.0f} s)")
    return "\n".join(lines)


def peak_rss_kib() -> int:
    """This process's peak resident set (KiB). Linux: VmHWM, which starts afresh at exec; getrusage's
    ru_maxrss does not (a child started by a large parent reports the parent's peak)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(re.search(r"VmHWM:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    except (OSError, AttributeError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(ckpt: str, image: str, out: str, budget: int) -> None:
    """In a fresh process: predict `image` to OME-Zarr through predict_files; print peak RSS (KiB)."""
    import torch  # noqa: F401  (imported first so that the baseline includes it)

    from mmv_zoo.predict.batch import predict_files
    from mmv_zoo.predict.engine import Options
    from mmv_zoo.predict.files import Selection

    before = peak_rss_kib()  # torch and the engine imported
    predict_files(ckpt, [image], Path(out), overwrite=True, options=Options(budget=budget),
                  selection=Selection(format="ome-zarr"))
    print(f"before_kib={before} peak_kib={peak_rss_kib()}")


def memory_rows(args: argparse.Namespace, work: Path) -> None:
    """Peak RSS of predict_files on a (2, 1, Z, Y, X) OME-Zarr image and one 8x larger (2x in Y, 4x in X),
    each in a fresh process; prints one block."""
    import math

    import numpy as np

    from mmv_zoo.predict.halo import entry_halo
    from mmv_zoo.predict.tiler import plan_tiles

    entry, model = load(args.memory_network, args.set)
    ckpt = save_checkpoint(model, work / "memory.ckpt")
    rules = entry.mmv.network.size_rule(3)
    halo, _ = entry_halo(entry, model.inference_model().eval())
    base = args.memory_size
    rows = []
    for scale in ((1, 1, 1), (1, 2, 4)):  # 8x the voxels; the same Z, so that tiles can be alike
        shape = tuple(s * k for s, k in zip(base, scale, strict=True))
        plan = plan_tiles(shape, rules, halo, args.memory_budget, border="image")
        data = np.random.default_rng(1).integers(100, 4000, size=(2, 1, *shape), dtype=np.uint16)
        src = write_image(work / f"mem_{scale}.ome.zarr", data)
        del data
        t0 = time.perf_counter()
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(ckpt), str(src), str(work / "memout"),
                              str(args.memory_budget)], capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        found = re.search(r"before_kib=(\d+) peak_kib=(\d+)", res.stdout)
        if res.returncode or not found:
            print(f"  memory child failed ({res.returncode}): {res.stderr.strip().splitlines()[-1:]}")
            return
        before, peak_kib = (int(v) / 1024 for v in found.groups())
        rows.append((shape, plan, before, peak_kib, seconds))
    print(f"\npeak resident memory, predict_files (T=2, C=1, Z, Y, X) OME-Zarr -> OME-Zarr in a fresh process, "
          f"network {args.memory_network} ({', '.join(NETWORKS[args.memory_network] + args.set) or 'as shipped'}), "
          f"budget {args.memory_budget} voxels, load {fmt_load()}")
    for shape, plan, before, peak_mib, seconds in rows:
        print(f"  2x1x{fmt_shape(shape):<14} tile {fmt_shape(plan.largest):<12} {len(plan):3d} tiles/frame "
              f"({math.prod(plan.largest) / 1e6:.2f} M voxels)  "
              f"peak RSS {peak_mib:6.0f} MiB (imports {before:4.0f} MiB, then +{peak_mib - before:5.0f} MiB)  "
              f"{seconds:5.0f} s")
    (_, _, b0, p0, _), (_, _, b1, p1, _) = rows
    print(f"  image 8x larger: peak RSS grows {100 * (p1 / p0 - 1):+.1f}% (target < 20%); the part above the "
          f"import baseline from {p0 - b0:.0f} to {p1 - b1:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--network", choices=sorted(NETWORKS), default="small",
                    help="small: fnet depth 3 x16 (default); fnet3d: the paper's fnet-3D; tiny: depth 2 x8")
    ap.add_argument("--set", action="append", default=[], help="extra entry override, e.g. network.depth=2")
    ap.add_argument("--small", type=shape_arg, default=(32, 256, 256), help="first volume Z,Y,X")
    ap.add_argument("--large", type=shape_arg, default=None,
                    help="second volume Z,Y,X (default 64,512,512; --quick 32,256,512; the issue's is 64,1024,1024)")
    ap.add_argument("--budget", type=int, default=None,
                    help="voxels per tile (default: the engine's, from the memory it may use)")
    ap.add_argument("--repeat", type=int, default=None, help="rounds of the speed-up table (default 3, --quick 2)")
    ap.add_argument("--runs", type=int, default=1,
                    help="rounds of each volume's timings (floor, MONAI, ours; default 1, medians if more)")
    ap.add_argument("--speed-shape", type=shape_arg, default=(32, 192, 192), help="tile Z,Y,X of the speed-up table")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile (its first call takes a minute)")
    ap.add_argument("--memory-network", choices=sorted(NETWORKS), default="tiny")
    ap.add_argument("--memory-size", type=shape_arg, default=(32, 256, 256),
                    help="Z,Y,X of the smaller 5D image of the memory test (the other is 2x in Y, 4x in X); keep "
                         "it larger than one tile, or the two images are not tiled alike")
    ap.add_argument("--memory-budget", type=int, default=300_000,
                    help="voxels per tile in the memory test (small, so that both images get tiles of the same size)")
    ap.add_argument("--skip", action="append", default=[], choices=["volumes", "speedups", "memory"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--memory-child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        ckpt, image, out, budget = args.memory_child
        memory_child(ckpt, image, out, int(budget))
        return

    import torch

    from mmv_zoo.predict.fast import cpu_inference
    from mmv_zoo.predict.halo import entry_halo
    from mmv_zoo.predict.memory import tile_memory, voxel_budget
    from mmv_zoo.predict.tiler import plan_tiles

    args.large = args.large or ((32, 256, 512) if args.quick else (64, 512, 512))
    args.repeat = args.repeat or (2 if args.quick else 3)
    compile_ = not (args.no_compile or args.quick)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"load average {fmt_load()} (1/5/15 min)")

    entry, model = load(args.network, args.set)
    net = model.inference_model().eval()
    if args.budget is None:  # what the engine takes: the memory it may use / the network's bytes per voxel
        args.budget = voxel_budget(cpu_inference(net, 3)[0], entry)
        print(f"tile memory {tile_memory() / 2**30:.1f} GiB (the engine's default on this machine)")
    rules = entry.mmv.network.size_rule(3)
    params = sum(p.numel() for p in net.parameters())
    t0 = time.perf_counter()
    halo, radius = entry_halo(entry, net)
    probe_s = time.perf_counter() - t0
    fpv = flops_per_voxel(net, tuple(r.fit(32) for r in rules))
    cfg = entry.mmv.network
    print(f"network {args.network}: fnet depth {cfg.depth} mult_chan {cfg.mult_chan}, random weights, "
          f"{params / 1e6:.2f} M parameters, {fpv / 1e3:.1f} kFLOP per voxel "
          f"({fpv * 32 * 256 * 256 / 1e12:.3f} TFLOP for 1x32x256x256)")
    print(f"receptive-field radius {fmt_shape(tuple(radius))}, halo {fmt_shape(tuple(halo))} "
          f"(measured in {probe_s:.1f} s), tile budget {args.budget} voxels")

    with tempfile.TemporaryDirectory(prefix="predict_bench_") as tmp:
        work = Path(tmp)
        if "volumes" not in args.skip:
            volumes = [args.small, args.large]
            args.plans = {v: plan_tiles(v, rules, halo, args.budget, border="image") for v in volumes}
            shapes = {p.largest for p in args.plans.values()}
            shapes |= {v for v in volumes if all(r.fit(n) == n for r, n in zip(rules, v, strict=True))
                       and v[0] * v[1] * v[2] <= args.budget}
            args.forms = engine_forms(net)
            for s in shapes:  # first calls (oneDNN primitives for a new shape) outside the timings
                for form, fmt in args.forms.values():
                    forward_time(form, s, 1, warmup=0, fmt=fmt)
            ckpt = save_checkpoint(model, work / "bench.ckpt")
            for v in volumes:
                volume_rows(args, entry, model, net, v, fpv, sorted(shapes), ckpt, work)
        if "speedups" not in args.skip:
            peak = matmul_peak(args.repeat)
            print(speedups(net, args.speed_shape, args.repeat, compile_, fpv, peak))
        if "memory" not in args.skip:
            memory_rows(args, work)


if __name__ == "__main__":
    main()
