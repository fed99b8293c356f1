"""Checkpoints of the MMV_Im2Im toolbox (Sonneck et al. 2024, mmv_zoo's predecessor) as the weights of
an entry's network.

MMV_Im2Im saves PyTorch Lightning checkpoints whose LightningModule keeps the network as `net`, so
the state-dict keys are `net.<network keys>` (other keys, e.g. a loss's buffers, are not weights of
the network and are ignored). MONAI networks keep MONAI's key names. fnet there has the layout of
pytorch_fnet (Ounkomol et al. 2018), renamed here to mmv_zoo's `mmv_zoo.nets.fnet`:

    pytorch_fnet (per level: net_recurse, sub_u, ...)      mmv_zoo
    sub_2conv_{more,less}.conv1 / bn1 / conv2 / bn2        sub_2conv_{more,less}.block.0 / 1 / 3 / 4
    conv_down, bn0                                         conv_down.0, conv_down.1
    convt, bn1                                             convt.0, convt.1

The weights are loaded strictly: a checkpoint that does not fit the entry's network (other
settings, another architecture) is an error naming the entry and the first differing keys, never
a partly initialized network. Files are read with `torch.load(weights_only=True)` only. Building the
entry's framework around them is `mmv_zoo.run.load_im2im_checkpoint`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import RunError

PREFIX = "net."
_FNET_DOUBLE_CONV = {"conv1": "block.0", "bn1": "block.1", "conv2": "block.3", "bn2": "block.4"}
_FNET_LEVEL_NORM = {"bn0": "conv_down.1", "bn1": "convt.1"}
_FNET_LEVELS = ("net_recurse", "sub_u")
_PARAMS = ("weight", "bias")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0][:200] if lines else type(exc).__name__


def fnet_key(key: str) -> str:
    """A pytorch_fnet state-dict key -> the key of `mmv_zoo.nets.fnet.FNet` (other keys unchanged)."""
    parts = key.split(".")
    out = []
    for i, part in enumerate(parts):
        prev = parts[i - 1] if i else ""
        after = parts[i + 1] if i + 1 < len(parts) else ""
        if prev in ("sub_2conv_more", "sub_2conv_less") and part in _FNET_DOUBLE_CONV:
            out.append(_FNET_DOUBLE_CONV[part])
        elif prev in _FNET_LEVELS and part in _FNET_LEVEL_NORM:
            out.append(_FNET_LEVEL_NORM[part])
        elif prev in _FNET_LEVELS and part in ("conv_down", "convt") and after in _PARAMS:
            out.append(f"{part}.0")
        else:
            out.append(part)
    return ".".join(out)


def _safe_classes() -> list[Any]:
    """Classes besides tensors that MMV_Im2Im checkpoints hold and weights-only loading may rebuild:
    MONAI's MetaTensor, the value of the early-stopping and checkpoint callbacks' state in the paper's
    label-free configurations (a tensor subclass: rebuilding it runs no code of the file's), and the
    string enums its metadata is keyed by (MetaKeys, SpaceKeys; TraceKeys and the others in its
    `applied_operations`, which MMV_Im2Im 0.8.1's cropping transforms fill): an enum member is
    rebuilt by looking its value up, nothing else."""
    try:
        from monai.data.meta_tensor import MetaTensor
        from monai.utils.enums import LazyAttr, MetaKeys, SpaceKeys, TraceKeys, TraceStatusKeys
    except ImportError:  # MONAI is a dependency; without it such a file is refused as any other
        return []
    return [MetaTensor, MetaKeys, SpaceKeys, TraceKeys, TraceStatusKeys, LazyAttr]


def read_network_state(path: Path, what: str | None = None) -> dict[str, Any]:
    """The network's tensors of an MMV_Im2Im checkpoint: its `state_dict` entries under `net.`, prefix
    removed (a file that is itself such a state dict is accepted too). Errors start with `what`
    (default: the path)."""
    import pickle

    import torch

    path = Path(path)
    what = what or str(path)
    try:
        with torch.serialization.safe_globals(_safe_classes()):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        example = f" (e.g. {found.group(1)})" if found else ""
        raise RunError(f"{what}: torch.load(weights_only=True) refuses this checkpoint: it holds pickled Python "
                       f"objects{example}, not only tensors, and mmv_zoo never unpickles downloaded files; if you "
                       "trust it, save its state_dict alone (torch.save(ckpt['state_dict'], ...)) and use that "
                       "file") from None
    except Exception as e:  # a truncated file, not a PyTorch file at all, ...
        raise RunError(f"{what}: not a readable PyTorch checkpoint ({type(e).__name__}: {_first_line(e)})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        raise RunError(f"{what}: not a PyTorch Lightning checkpoint (no state_dict)")
    net = {k[len(PREFIX):]: v for k, v in state.items() if isinstance(k, str) and k.startswith(PREFIX)}
    if not net:
        first = ", ".join(map(str, list(state)[:3])) or "none"
        raise RunError(f"{what}: no network weights: the state_dict has no keys under {PREFIX!r} "
                       f"(the LightningModule attribute of MMV_Im2Im's network); first keys: {first}")
    bad = [k for k, v in net.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise RunError(f"{what}: state_dict entry {PREFIX}{bad[0]} is not a tensor")
    return net


def to_network_keys(state: dict[str, Any], network_kind: str) -> dict[str, Any]:
    """MMV_Im2Im's network keys -> mmv_zoo's for that network kind (fnet is renamed, MONAI kept)."""
    if network_kind == "fnet":
        return {fnet_key(k): v for k, v in state.items()}
    return dict(state)


def _show(keys: list[str], n: int = 3) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def load_into(net: Any, state: dict[str, Any], what: str) -> None:
    """Load `state` into `net` strictly; a mismatch is one RunError line starting with `what`."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}" for k in expected
              if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_show(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_show(unexpected)}")
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es) (checkpoint vs network): {_show(shapes)}")
    if problems:
        raise RunError(f"{what}; " + "; ".join(problems))
    net.load_state_dict(state, strict=True)
