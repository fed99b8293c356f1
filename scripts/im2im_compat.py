"""MMV_Im2Im 0.8.1 checkpoints, as its own trainer writes them, predicted and exported by mmv_zoo.

    .venv/bin/python scripts/im2im_compat.py [--work DIR] [--env DIR] [--configs a,b] [--sizes paper,tiny]
                                             [--no-checker] [--write-test-data]

1. A virtual environment of its own (default ~/.cache/mmv_zoo_bench/im2im-0.8.1, reused when it
   has the marker file this script writes) gets `mmv_im2im==0.8.1` from PyPI with the CPU torch
   2.13.0 wheel pinned in the same `pip install`, so no CUDA build is pulled; `pip freeze` of it is
   kept next to the marker (`requirements.txt`).
2. For three of the paper's configurations -- denoising (MONAI UNet, as denoise_3d_planaria),
   label-free (fnet, as labelfree_3d_*) and modality transfer (as modality_transfer_3d_*) -- MMV_Im2Im's
   own trainer (its `run_im2im --config` CLI) trains a few CPU steps on synthetic pairs made from
   crops of mmv_zoo/sample_data/cells3d_nucleus_3d/noisy/nucleus.tif, with the paper's network
   section and the checkpoint / early-stopping callbacks as the paper's configuration YAMLs set them
   (size `paper`), and again with the network shrunk (size `tiny`: the checkpoints kept under
   tests/data/im2im).
3. MMV_Im2Im's own inference (`run_im2im`, mode inference, the paper's inference preprocessing)
   predicts one whole volume with each checkpoint in one pass of the network; `mmv-zoo predict`
   predicts the same file with a temporary entry (made with `mmv-zoo new NAME --from ENTRY`) whose
   `config.mmv_zoo.pretrained` is that checkpoint (`format: mmv_im2im_checkpoint`), with
   `--border image` (tiles see nothing past the image, so the result is the network's one pass).
   Both outputs are the raw network output on the input normalized by each tool's own code with the
   same settings (MMV_Im2Im: MONAI's ScaleIntensityRangePercentiles / its norm_around_center;
   mmv_zoo: the entry's `percentile` / `center` normalization), so they are compared as they are,
   no affine fit: Pearson over the whole volume (required >= 0.999) and the largest difference.
4. `mmv-zoo export ENTRY --sample SAMPLE` packages each, and the independent checker
   (../shared/tools/check_bioimageio_package.sh) checks the package. SAMPLE is the nucleus stack
   mirrored at its borders to 60x160x160: the stack itself is smaller than the least input of the
   paper-size packages (label-free and modality transfer: 144 in y and x).

Prints a table and exits 1 if a row fails (checkpoint not loaded, Pearson < 0.999, checker FAILED).

What MMV_Im2Im 0.8.1 needs on a CPU-only torch (applied by this script, nowhere else):
- its FCN LightningModule calls `torch.cuda.synchronize()` at every epoch end, which a CPU build of
  torch refuses ("Torch not compiled with CUDA enabled"): the CLI runs behind a two-line shim that
  makes it a no-op when CUDA is unavailable;
- the paper's YAMLs (and 0.8.1's own presets) use MONAI's `AddChanneld`, removed from MONAI 1.5+ (0.8.1
  requires monai>=1.5): `EnsureChannelFirstd(channel_dim: no_channel)` does the same;
- `accelerator: gpu`, `precision: 16` and `detect_anomaly` of the paper's trainer section become
  cpu / 32 / off; the data loaders use monai.data.Dataset with no workers.
The paper's modality-transfer network is aicsmlsegment's `NetworkArchitecture.unet_xy_zoom_0pad_single.UNet3D`,
which no release of aicsmlsegment on PyPI has (0.0.7 ships Net3D only); the modality-transfer rows
train the MONAI UNet of the modality_transfer_3d_* entries instead (their documented stand-in).

--write-test-data copies the `tiny` checkpoints, their entries, the input volume and MMV_Im2Im's
predictions into tests/data/im2im (tests/test_im2im_checkpoints.py reads them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tifffile
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT.parent / "shared" / "tools" / "check_bioimageio_package.sh"
NUCLEUS = ROOT / "mmv_zoo" / "sample_data" / "cells3d_nucleus_3d" / "noisy" / "nucleus.tif"
TEST_DATA = ROOT / "tests" / "data" / "im2im"
VERSION = "0.8.1"
TORCH = "torch==2.13.0"
DEFAULT_ENV = Path.home() / ".cache" / "mmv_zoo_bench" / f"im2im-{VERSION}"
MIN_PEARSON = 0.999
SAMPLE_SHAPE = (60, 160, 160)  # ZYX; every network's least exported input (paper fnet: 48x144x144) fits

ENV_VARS = {"OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}

SHIM = """import sys
import torch
if not torch.cuda.is_available():  # MMV_Im2Im 0.8.1's pl_FCN calls it at every epoch end
    torch.cuda.synchronize = lambda *args, **kwargs: None
from mmv_im2im.bin.run_im2im import main
sys.argv = ["run_im2im", "--config", sys.argv[1]]
main()
"""

INSPECT = """import json, sys, torch
from monai.data import MetaTensor
ck = torch.load(sys.argv[1], map_location="cpu", weights_only=False)  # our own file, just written
def kinds(v):
    if isinstance(v, dict):
        return sorted({k for x in v.values() for k in kinds(x)})
    if isinstance(v, (list, tuple)):
        return sorted({k for x in v for k in kinds(x)})
    return [type(v).__module__ + "." + type(v).__name__]
print(json.dumps({"keys": sorted(ck), "n_net": sum(k.startswith("net.") for k in ck["state_dict"]),
                  "callbacks": {k: kinds(v) for k, v in ck.get("callbacks", {}).items()},
                  "metatensor": any("MetaTensor" in t for v in ck.get("callbacks", {}).values() for t in kinds(v))}))
"""

# ---------------------------------------------------------------- the paper's configurations

_UNET = "monai.networks.nets"
_CKPT = "lightning.pytorch.callbacks.model_checkpoint"
_STOP = "lightning.pytorch.callbacks.early_stopping"


def _load(keys: list[str]) -> list[dict]:
    """LoadImaged + AddChanneld as the paper's YAMLs have them (AddChanneld -> EnsureChannelFirstd)."""
    return [
        {"module_name": "monai.transforms", "func_name": "LoadImaged",
         "params": {"keys": keys, "dimension_order_out": "ZYX", "T": 0, "C": 0}},
        {"module_name": "monai.transforms", "func_name": "EnsureChannelFirstd",
         "params": {"keys": keys, "channel_dim": "no_channel"}},
    ]


def _crop(roi: list[int], n: int) -> dict:
    return {"module_name": "monai.transforms", "func_name": "RandSpatialCropSamplesd",
            "params": {"keys": ["IM", "GT"], "random_size": False, "num_samples": n, "roi_size": roi}}


_ENSURE = {"module_name": "monai.transforms", "func_name": "EnsureTyped", "params": {"keys": ["IM", "GT"]}}
_FLIP = [{"module_name": "monai.transforms", "func_name": "RandFlipd", "params": {"prob": 0.5, "keys": ["IM", "GT"]}}]

CONFIGS: dict[str, dict] = {
    # paper_configs/denoising_3d_{train,inference}.yaml of MMV_Im2Im
    "denoising": {
        "entry": "denoise_3d_planaria",
        "net": {"paper": {"module_name": _UNET, "func_name": "UNet",
                          "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                     "channels": [64, 128, 256, 512], "strides": [2, 2, 2], "num_res_units": 3,
                                     "norm": "BATCH"}},
                "tiny": {"module_name": _UNET, "func_name": "UNet",
                         "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                    "channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 3, "norm": "BATCH"}}},
        "entry_net": {"paper": None,  # the entry's own network
                      "tiny": {"kind": "unet", "spatial_dims": 3, "channels": [4, 8, 16], "strides": [2, 2],
                               "num_res_units": 3, "norm": "batch"}},
        "train_shape": (16, 32, 32),  # the paper trains on CARE's pre-cut, pre-normalized patches
        "normalized_data": True,
        "preprocess": _load(["IM", "GT"]) + [_ENSURE],
        "batch_size": 2,
        "optimizer": {"lr": 0.001, "weight_decay": 0.0005}, "gamma": 0.98,
        "trainer": {"gradient_clip_val": 0.8},
        "callbacks": [
            {"module_name": _STOP, "func_name": "EarlyStopping",
             "params": {"monitor": "val_loss_epoch", "patience": 100, "verbose": True}},
            {"module_name": _CKPT, "func_name": "ModelCheckpoint",
             "params": {"monitor": "val_loss_epoch", "filename": "{epoch}-{val_loss:.5f}", "save_top_k": 2,
                        "save_last": True, "save_weights_only": True}},
        ],
        "checkpoint": "last.ckpt",  # the paper's inference YAML loads last.ckpt
        "infer_preprocess": [{"module_name": "monai.transforms", "func_name": "ScaleIntensityRangePercentiles",
                              "params": {"lower": 3, "upper": 99.9, "b_min": 0, "b_max": 1}}],
    },
    # paper_configs/labelfree_3d_FCN_{train,inference}.yaml
    "label-free": {
        "entry": "labelfree_3d_fnet",
        "net": {"paper": {"module_name": "mmv_im2im.models.nets.fnet_nn_3d", "func_name": "Net",
                          "params": {"depth": 4, "mult_chan": 32, "in_channels": 1, "out_channels": 1}},
                "tiny": {"module_name": "mmv_im2im.models.nets.fnet_nn_3d", "func_name": "Net",
                         "params": {"depth": 2, "mult_chan": 4, "in_channels": 1, "out_channels": 1}}},
        "entry_net": {"paper": None, "tiny": {"kind": "fnet", "spatial_dims": 3, "depth": 2, "mult_chan": 4}},
        "train_shape": (32, 48, 48),
        "normalized_data": False,
        "preprocess": _load(["IM", "GT"]) + [
            {"module_name": "mmv_im2im.preprocessing.transforms", "func_name": "norm_around_center",
             "params": {"keys": ["IM", "GT"], "min_z": 32}},
            _crop([16, 32, 32], 4), _ENSURE],  # the paper: [32, 128, 128]
        "batch_size": 2,
        "optimizer": {"lr": 0.001, "weight_decay": 0.0005}, "gamma": 0.98,
        "trainer": {},
        "callbacks": [
            {"module_name": _STOP, "func_name": "EarlyStopping",
             "params": {"monitor": "val_loss_epoch", "patience": 50}},
            {"module_name": _CKPT, "func_name": "ModelCheckpoint",
             "params": {"monitor": "val_loss_epoch", "filename": "best"}},
        ],
        "checkpoint": "best.ckpt",
        "infer_preprocess": [{"module_name": "mmv_im2im.preprocessing.transforms", "func_name": "norm_around_center",
                              "params": {"min_z": 32}}],
    },
    # paper_configs/modality_transfer_3d_{train,inference}.yaml; network: the entries' MONAI stand-in
    "modality transfer": {
        "entry": "modality_transfer_3d_microtubule",
        "net": {"paper": {"module_name": _UNET, "func_name": "UNet",
                          "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                     "channels": [64, 128, 256, 512, 512], "strides": [[1, 2, 2]] * 4,
                                     "num_res_units": 2, "norm": "BATCH"}},
                "tiny": {"module_name": _UNET, "func_name": "UNet",
                         "params": {"spatial_dims": 3, "in_channels": 1, "out_channels": 1,
                                    "channels": [4, 8, 16], "strides": [[1, 2, 2]] * 2, "num_res_units": 2,
                                    "norm": "BATCH"}}},
        "entry_net": {"paper": None,
                      "tiny": {"kind": "unet", "spatial_dims": 3, "channels": [4, 8, 16], "strides": [[1, 2, 2]] * 2,
                               "num_res_units": 2, "norm": "batch"}},
        "train_shape": (32, 48, 48),
        "normalized_data": False,
        "preprocess": _load(["IM", "GT"]) + [
            {"module_name": "monai.transforms", "func_name": "ScaleIntensityRangePercentilesd",
             "params": {"keys": ["IM", "GT"], "lower": 0.01, "upper": 99.99, "b_min": -1, "b_max": 1}},
            _crop([6, 32, 32], 2), _ENSURE],  # the paper: [6, 512, 512]
        "batch_size": 2,
        "optimizer": {"lr": 0.001, "weight_decay": 0.0005}, "gamma": 0.99,
        "trainer": {},
        "callbacks": [  # the paper's early stopping is commented out there
            {"module_name": _CKPT, "func_name": "ModelCheckpoint",
             "params": {"monitor": "val_loss", "filename": "{epoch}-{val_loss:.5f}", "save_top_k": 2,
                        "save_last": True, "save_weights_only": True}},
        ],
        "checkpoint": "last.ckpt",
        "infer_preprocess": [{"module_name": "monai.transforms", "func_name": "ScaleIntensityRangePercentiles",
                              "params": {"lower": 0.01, "upper": 99.99, "b_min": -1, "b_max": 1}}],
    },
}
SLUG = {"denoising": "denoising", "label-free": "labelfree", "modality transfer": "modality_transfer"}

# ---------------------------------------------------------------- helpers


def env() -> dict[str, str]:
    e = dict(os.environ)
    e.update(ENV_VARS)
    return e


def run(cmd: list[str], log: Path, cwd: Path | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run `cmd`, its output appended to `log`; raises with the log's tail if it fails."""
    t0 = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(map(str, cmd))}\n")
        f.flush()
        proc = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT, cwd=cwd, env=env(),
                              timeout=timeout)
        f.write(f"[exit {proc.returncode} after {time.time() - t0:.0f} s]\n")
    if proc.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"{cmd[0]} ... failed (exit {proc.returncode}); end of {log}:\n{tail}")
    return proc


def ensure_env(path: Path, log: Path) -> Path:
    """The MMV_Im2Im environment's python (created and installed on first use)."""
    py = path / "bin" / "python"
    marker = path / ".mmv_zoo_im2im_ready"
    if marker.is_file() and py.is_file():
        return py
    print(f"creating the MMV_Im2Im {VERSION} environment at {path} (one time; a few minutes)", flush=True)
    base = getattr(sys, "_base_executable", None) or shutil.which("python3") or sys.executable
    run([base, "-m", "venv", "--clear", path], log)
    # torch pinned in the same resolve: the CPU wheel (2.13.0+cpu) satisfies mmv_im2im's torch>=2.6.0,
    # so pip neither replaces it nor pulls a CUDA build; no --no-deps was needed for 0.8.1.
    run([py, "-m", "pip", "install", "--progress-bar", "off", TORCH, f"mmv_im2im=={VERSION}"], log, timeout=3600)
    freeze = subprocess.run([str(py), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    (path / "requirements.txt").write_text(freeze)
    if "+cpu" not in next((ln for ln in freeze.splitlines() if ln.startswith("torch==")), "") or "nvidia" in freeze:
        raise RuntimeError(f"{path}: the environment did not get the CPU torch wheel alone; see {log}")
    marker.write_text(json.dumps({"mmv_im2im": VERSION, "torch": TORCH}) + "\n")
    return py


def synthetic_pairs(folder: Path, shape: tuple[int, int, int], normalized: bool, kind: str, n: int = 6) -> None:
    """`n` IM/GT pairs (MMV_Im2Im's `<name>_IM.tiff` / `<name>_GT.tiff` layout): crops of the cells3d
    nucleus stack, smoothed (GT) and a transformed, noisier version (IM)."""
    from scipy.ndimage import gaussian_filter

    vol = tifffile.imread(NUCLEUS).astype(np.float32)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    z, y, x = shape
    for i in range(n):
        oz, oy, ox = (int(rng.integers(0, s - c + 1)) for s, c in zip(vol.shape, shape, strict=True))
        crop = vol[oz:oz + z, oy:oy + y, ox:ox + x]
        if i % 2:
            crop = crop[:, ::-1]
        gt = gaussian_filter(crop, 1.5)
        # label-free: a brightfield-like stand-in, an edge map of the structure
        im = np.abs(gaussian_filter(crop, 1.0) - gaussian_filter(crop, 3.0)) if kind == "label-free" else crop.copy()
        im = im + rng.normal(0, 0.1 * float(im.std()), im.shape)
        if normalized:  # the paper's denoising patches come normalized (CARE's percentile 3-99.9)
            gt, im = (_pct(a) for a in (gt, im))
        tifffile.imwrite(folder / f"pair{i}_IM.tiff", np.ascontiguousarray(im, np.float32))
        tifffile.imwrite(folder / f"pair{i}_GT.tiff", np.ascontiguousarray(gt, np.float32))


def _pct(a: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(a, [3, 99.9])
    return (a - lo) / (hi - lo)


def train_config(name: str, size: str, data: Path, root: Path, steps_epochs: int) -> dict:
    c = CONFIGS[name]
    loader = {"dataloader_type": {"module_name": "monai.data", "func_name": "Dataset"},
              "dataloader_params": {"batch_size": c["batch_size"], "pin_memory": False, "num_workers": 0}}
    return {
        "mode": "train",
        "data": {"category": "pair", "data_path": str(data),
                 "dataloader": {"train_val_ratio": 0.2, "train": loader,
                                "val": {**loader, "dataloader_params": {**loader["dataloader_params"]}}},
                 "preprocess": c["preprocess"], "augmentation": _FLIP},
        "model": {"framework": "FCN", "net": c["net"][size],
                  "criterion": {"module_name": "torch.nn", "func_name": "MSELoss", "params": {"reduction": "mean"}},
                  "optimizer": {"module_name": "torch.optim", "func_name": "Adam", "params": c["optimizer"]},
                  "scheduler": {"module_name": "torch.optim.lr_scheduler", "func_name": "ExponentialLR",
                                "params": {"gamma": c["gamma"]}}},
        "trainer": {"verbose": True,
                    "params": {"accelerator": "cpu", "devices": 1, "precision": 32, "max_epochs": steps_epochs,
                               "default_root_dir": str(root), "log_every_n_steps": 1,
                               "enable_progress_bar": False, **c["trainer"]},
                    "callbacks": c["callbacks"]},
    }


def infer_config(name: str, size: str, ckpt: Path, inp: Path, out: Path) -> dict:
    c = CONFIGS[name]
    return {
        "mode": "inference",
        "data": {"inference_input": {"dir": str(inp), "data_type": "tif",
                                     "reader_params": {"dimension_order_out": "ZYX", "C": 0, "T": 0}},
                 "inference_output": {"path": str(out), "suffix": "_pred"},
                 "preprocess": c["infer_preprocess"]},
        # no sliding_window_params: one pass of the network over the whole volume
        "model": {"framework": "FCN", "net": c["net"][size], "checkpoint": str(ckpt),
                  "model_extra": {"cpu_only": True}},
    }


def write_entry(name: str, size: str, slug: str, zoo: Path, ckpt: Path, log: Path,
                relative: bool = False) -> Path:
    """A zoo entry made with `mmv-zoo new SLUG --from ENTRY`, its pretrained weights `ckpt`."""
    c = CONFIGS[name]
    run([sys.executable, "-m", "mmv_zoo", "new", slug, "--from", c["entry"], "--zoo", zoo], log)
    folder = zoo / slug
    rdf = folder / "rdf.yaml"
    data = yaml.safe_load(rdf.read_text())
    mmv = data["config"]["mmv_zoo"]
    if c["entry_net"][size] is not None:
        mmv["network"] = c["entry_net"][size]
        mmv["data"]["patch"] = [16, 24, 24] if name != "label-free" else [32, 24, 24]
    data["name"] = f"MMV_Im2Im {VERSION.replace('.', '_')} checkpoint - {name} ({size})"
    source = ckpt.name if relative else str(ckpt)
    mmv["pretrained"] = {"source": source, "sha256": hashlib.sha256(ckpt.read_bytes()).hexdigest(),
                         "format": "mmv_im2im_checkpoint",
                         "trained_on": f"MMV_Im2Im {VERSION}'s own trainer, a few CPU steps on synthetic pairs "
                                       "(scripts/im2im_compat.py)"}
    rdf.write_text(yaml.safe_dump(data, sort_keys=False, width=110))
    return folder


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))


def read_volume(path: Path) -> np.ndarray:
    return np.squeeze(tifffile.imread(path)).astype(np.float32)


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.0f} kB"


# ---------------------------------------------------------------- one row


def one(name: str, size: str, py: Path, work: Path, volume: Path, sample: Path, epochs: int, checker: bool) -> dict:
    slug = f"{SLUG[name]}_{size}"
    base = work / slug
    if base.exists():
        shutil.rmtree(base)
    base.mkdir(parents=True)
    log = base / "log.txt"
    row: dict = {"configuration": name, "size": size, "base": base, "ckpt": None, "bytes": 0, "metatensor": None,
                 "loads": False, "pearson": None, "maxdiff": None, "checker": "-", "note": ""}
    c = CONFIGS[name]
    t0 = time.time()
    try:
        data = base / "data"
        synthetic_pairs(data, c["train_shape"], c["normalized_data"], name)
        cfg = base / "train.yaml"
        cfg.write_text(yaml.safe_dump(train_config(name, size, data, base / "train", epochs), sort_keys=False))
        run([py, "-c", SHIM, cfg], log, cwd=base)
        found = sorted((base / "train").rglob(c["checkpoint"]))
        if not found:
            raise RuntimeError(f"MMV_Im2Im wrote no {c['checkpoint']} under {base / 'train'}")
        ckpt = found[-1]
        row["ckpt"], row["bytes"] = ckpt, ckpt.stat().st_size
        info = json.loads(subprocess.run([str(py), "-c", INSPECT, str(ckpt)], capture_output=True, text=True,
                                         env=env(), check=True).stdout.strip().splitlines()[-1])
        row["metatensor"], row["info"] = info["metatensor"], info

        inp = base / "input"
        inp.mkdir()
        shutil.copy(volume, inp / volume.name)
        out = base / "im2im_pred"
        out.mkdir()
        icfg = base / "inference.yaml"
        icfg.write_text(yaml.safe_dump(infer_config(name, size, ckpt, inp, out), sort_keys=False))
        run([py, "-c", SHIM, icfg], log, cwd=base)
        theirs = read_volume(next(out.glob("*_pred.tiff")))
        np.save(base / "im2im_pred.npy", theirs)

        zoo = base / "zoo"
        entry = write_entry(name, size, f"im2im_{slug}", zoo, ckpt, log)
        ours_dir = base / "mmv_zoo_pred"
        try:
            run([sys.executable, "-m", "mmv_zoo", "predict", entry, volume, "--out", ours_dir, "--border", "image"],
                log)
        except RuntimeError as e:
            errors = [ln for ln in str(e).splitlines() if ln.startswith("error: ")]
            row["note"] = (errors or str(e).splitlines())[-1][:240]
            raise
        row["loads"] = True
        ours = read_volume(next(ours_dir.glob("*.tif*")))
        if ours.shape != theirs.shape:
            raise RuntimeError(f"shapes differ: mmv_zoo {ours.shape}, MMV_Im2Im {theirs.shape}")
        row["pearson"] = pearson(ours, theirs)
        row["maxdiff"] = float(np.abs(ours - theirs).max())
        row["scale"] = float(np.abs(theirs).max())

        if checker:
            pkg = base / f"{slug}.zip"
            run([sys.executable, "-m", "mmv_zoo", "export", entry, "--out", pkg, "--sample", sample], log)
            row["pkg_bytes"] = pkg.stat().st_size
            clog = base / "checker.txt"
            proc = subprocess.run(["bash", str(CHECKER), str(pkg)], capture_output=True, text=True, env=env(),
                                  timeout=3600)
            clog.write_text(proc.stdout + proc.stderr)
            last = [ln for ln in proc.stdout.splitlines() if ln.strip()][-1:] or ["(no output)"]
            row["checker"] = "OK" if proc.returncode == 0 and last[0].startswith("bioimageio package OK") else "FAILED"
            if row["checker"] == "FAILED":
                row["note"] = row["note"] or f"checker: {last[0][:120]} (see {clog})"
    except Exception as e:  # noqa: BLE001 - one row fails, the table goes on
        row["note"] = row["note"] or str(e).splitlines()[0][:200]
        row["error"] = str(e)
    row["seconds"] = time.time() - t0
    return row


def ok(row: dict, checker: bool) -> bool:
    good = row["loads"] and row["pearson"] is not None and row["pearson"] >= MIN_PEARSON
    return bool(good and (not checker or row["checker"] == "OK"))


def table(rows: list[dict], checker: bool) -> str:
    head = ["configuration", "network", "checkpoint", "MetaTensor in callbacks", "loads", "Pearson",
            "max |diff|", "package checker", "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pear = "-" if r["pearson"] is None else f"{r['pearson']:.6f}"
        diff = "-" if r["maxdiff"] is None else f"{r['maxdiff']:.1e} (of {r['scale']:.2g})"
        meta = "-" if r["metatensor"] is None else ("yes" if r["metatensor"] else "no")
        lines.append("| " + " | ".join([
            r["configuration"], r["size"], mb(r["bytes"]) if r["bytes"] else "-", meta, "yes" if r["loads"] else "NO",
            pear, diff, r["checker"] if checker else "skipped", "ok" if ok(r, checker) else "FAIL"]) + " |")
    return "\n".join(lines)


def write_test_data(rows: list[dict], volume: Path, log: Path) -> None:
    """The tiny rows' checkpoints, entries (pretrained: the checkpoint next to rdf.yaml) and
    MMV_Im2Im's predictions, under tests/data/im2im."""
    TEST_DATA.mkdir(parents=True, exist_ok=True)
    shutil.copy(volume, TEST_DATA / "input.tif")
    for r in rows:
        if r["size"] != "tiny" or not ok(r, checker=False):
            continue
        slug = SLUG[r["configuration"]]
        folder = TEST_DATA / slug
        if folder.exists():
            shutil.rmtree(folder)
        staging = log.parent / "test_data_zoo"
        staging.mkdir(exist_ok=True)
        ckpt = staging / f"{slug}.ckpt"
        shutil.copy(r["ckpt"], ckpt)
        entry = write_entry(r["configuration"], "tiny", f"im2im_{slug}", staging, ckpt, log, relative=True)
        shutil.copy(ckpt, entry / ckpt.name)
        (entry / "README.md").write_text(
            f"# {slug}: an MMV_Im2Im {VERSION} checkpoint (test data)\n\n"
            f"`{ckpt.name}` is the checkpoint MMV_Im2Im {VERSION}'s own trainer wrote ({r['ckpt'].name}) for the "
            f"paper's {r['configuration']} configuration with its network shrunk; `expected.npy` is what "
            f"MMV_Im2Im's own inference predicts for `../input.tif`. Made by `scripts/im2im_compat.py "
            f"--write-test-data`.\n")
        np.save(entry / "expected.npy", np.load(r["base"] / "im2im_pred.npy"))
        shutil.copytree(entry, folder)
        print(f"wrote {folder} ({', '.join(f'{p.name} {mb(p.stat().st_size)}' for p in sorted(folder.iterdir()))})")


def test_volume(work: Path, shape: tuple[int, int, int]) -> Path:
    """A central crop of the cells3d nucleus stack (60x60x50, ZYX) that the network takes in one pass."""
    vol = tifffile.imread(NUCLEUS)
    z, y, x = shape
    oz, oy, ox = ((s - c) // 2 for s, c in zip(vol.shape, shape, strict=True))
    path = work / f"nucleus_{z}x{y}x{x}.tif"
    tifffile.imwrite(path, np.ascontiguousarray(vol[oz:oz + z, oy:oy + y, ox:ox + x]))
    return path


def sample_volume(work: Path, shape: tuple[int, int, int] = SAMPLE_SHAPE) -> Path:
    """The export's sample: the nucleus stack mirrored at its borders (np.pad symmetric) to `shape`.
    The stack (60x60x50) is smaller in y and x than the paper-size label-free and modality-transfer
    packages' least input (144: twice the networks' 64-pixel halo, rounded up to a multiple of 16)."""
    vol = tifffile.imread(NUCLEUS)
    pad = [((c - s) // 2, c - s - (c - s) // 2) if c > s else (0, 0) for s, c in zip(vol.shape, shape, strict=True)]
    big = np.pad(vol, pad, mode="symmetric")
    path = work / f"nucleus_mirrored_{'x'.join(map(str, big.shape))}.tif"
    tifffile.imwrite(path, np.ascontiguousarray(big))
    return path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path.home() / ".cache" / "mmv_zoo_bench" / "im2im_compat_work")
    ap.add_argument("--env", type=Path, default=DEFAULT_ENV, help="the MMV_Im2Im environment (created if missing)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated: " + ", ".join(CONFIGS))
    ap.add_argument("--sizes", default="paper,tiny", help="paper (the paper's networks), tiny (shrunk), or both")
    ap.add_argument("--epochs", type=int, default=2, help="training epochs (3 steps each)")
    ap.add_argument("--no-checker", action="store_true", help="skip export and the package checker")
    ap.add_argument("--write-test-data", action="store_true", help="copy the tiny rows into tests/data/im2im")
    args = ap.parse_args()
    os.environ.update(ENV_VARS)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        ap.error(f"unknown configuration(s) {bad}; known: {', '.join(CONFIGS)}")
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    args.work.mkdir(parents=True, exist_ok=True)
    log = args.work / "env_log.txt"
    py = ensure_env(args.env, log)
    checker = not args.no_checker
    rows = []
    volumes = {"paper": test_volume(args.work, (48, 48, 48)), "tiny": test_volume(args.work, (40, 32, 32))}
    sample = sample_volume(args.work)
    for size in sizes:
        for name in names:
            print(f"== {name} ({size})", flush=True)
            row = one(name, size, py, args.work, volumes[size], sample, args.epochs, checker)
            rows.append(row)
            print(f"   {'ok' if ok(row, checker) else 'FAIL'} in {row['seconds']:.0f} s"
                  + (f": {row['note']}" if row["note"] else ""), flush=True)
    print()
    print(f"MMV_Im2Im {VERSION} (torch {TORCH.split('==')[1]} CPU) checkpoints through mmv_zoo; volumes: "
          f"paper {volumes['paper'].name}, tiny {volumes['tiny'].name}, export sample {sample.name}; Pearson of "
          "the raw network outputs on the input as each tool normalizes it (no fit), required >= 0.999")
    print(table(rows, checker))
    for r in rows:
        if r["note"]:
            print(f"- {r['configuration']} ({r['size']}): {r['note']}")
    (args.work / "results.json").write_text(json.dumps(
        [{k: (str(v) if isinstance(v, Path) else v) for k, v in r.items() if k != "info"} for r in rows], indent=1))
    if args.write_test_data:
        write_test_data(rows, volumes["tiny"], log)
    return 0 if all(ok(r, checker) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
