"""The framework contract's torch-free half: what a framework declares to validation.

Every framework, built in or added through the `mmv_zoo.frameworks` entry-point group, is described
by one `FrameworkSpec`: the tasks, losses and data layouts it trains on (as `Literal` types, the way
CAREamics states which loss goes with which algorithm), its own settings block
(`config.mmv_zoo.<kind>`), whether it steps its own optimizers, its directions, the data module it
trains from, and the LightningModule that is the framework (`model`, a subclass of
`mmv_zoo.frameworks.base.Framework`). The entry's validators check every entry against the spec of
its framework, so a combination the framework cannot train is a validation error naming the field,
before torch is imported; training, prediction, export and run loading import `model` when they
need it.

Specs live in torch-free modules (the built-ins here in `settings/`), so that `mmv-zoo validate` and
`mmv-zoo list` never import torch or Lightning. The supervised framework `fcn`, the model to follow,
is declared at the end of this file.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from ..registry import framework_kinds, resolve_framework
from .messages import problems
from .strict import Strict

TASK_WORDS = {"segmentation": "semantic segmentation", "regression": "regression",
              "instance": "instance segmentation"}
PAIRED = ("paired_folders", "csv")
"""The layouts that pair each source with its target."""
FIELDS = {"task": "config.mmv_zoo.task", "loss": "config.mmv_zoo.loss.kind", "layout": "config.mmv_zoo.data.layout"}
"""The entry field each `Accepts` field stands for."""


class Accepts(BaseModel):
    """What a framework takes from the other sections: a subclass narrows each field to a `Literal`."""

    model_config = ConfigDict(frozen=True)
    task: str
    """`config.mmv_zoo.task`."""
    loss: str
    """`config.mmv_zoo.loss.kind`."""
    layout: str
    """`config.mmv_zoo.data.layout.layout`."""


@dataclass(frozen=True)
class FrameworkSpec:
    """One framework as validation, training, prediction and export see it (see the module doc)."""

    kind: str
    """The name entries give in `config.mmv_zoo.framework` (and its entry point's name)."""
    model: str
    """`module:Class` of its LightningModule, a `mmv_zoo.frameworks.base.Framework` subclass."""
    accepts: type[Accepts]
    """The tasks, losses and layouts it trains on, as Literal fields."""
    settings: type[Strict] | None = None
    """Its own settings block `config.mmv_zoo.<kind>` (all defaults when the entry has none); None: it
    takes no block."""
    default_loss: str | None = None
    """The loss an entry of this framework gets when it names none."""
    data_module: str = "mmv_zoo.data.module:PairedDataModule"
    """`module:Class` of the LightningDataModule it trains from, built as `Class(entry, data_folder)`."""
    exclusion_masks: bool = False
    """It uses the layout's exclusion (cost) masks (`data.layout.exclusion`)."""
    manual_optimization: bool = False
    """It steps its own optimizers (the GANs): Lightning's SWA, gradient clipping and accumulation,
    and the tune verb, do not apply."""
    directions: tuple[str, ...] = ()
    """The directions it predicts and exports in (CycleGAN: a2b, b2a); empty: one way only."""
    rules: Callable[[Any], None] | None = None
    """Further rules that span sections, given the validated entry; they raise ValueError whose message
    starts with the field at fault."""
    hints: tuple[tuple[str, str], ...] = ()
    """(an `accepts` field, advice) added to the message when that field is refused."""
    description: str = ""

    def takes(self, field: str) -> tuple[str, ...]:
        """The values an `accepts` field allows (empty when it is not narrowed to a Literal)."""
        annotation = self.accepts.model_fields[field].annotation
        if typing.get_origin(annotation) is Literal:
            return tuple(str(a) for a in typing.get_args(annotation))
        return ()


# ---------------------------------------------------------------- looking specs up


@cache
def framework_spec(kind: str) -> FrameworkSpec:
    """The spec of a framework kind, built in or from the `mmv_zoo.frameworks` entry-point group;
    KeyError for an unknown kind, TypeError for an entry point that names no FrameworkSpec."""
    spec = resolve_framework(kind)
    if not isinstance(spec, FrameworkSpec):
        raise TypeError(f"framework {kind!r}: its entry point names a {type(spec).__name__}, not a "
                        "mmv_zoo.settings.framework.FrameworkSpec")
    if spec.kind != kind:
        raise TypeError(f"framework {kind!r}: its entry point names the spec of {spec.kind!r}")
    return spec


def framework_specs() -> dict[str, FrameworkSpec]:
    """Every framework that can be resolved, by kind (a broken plugin is left out)."""
    out = {}
    for kind in framework_kinds():
        try:
            out[kind] = framework_spec(kind)
        except Exception:  # noqa: BLE001 - a broken plugin must not hide the others
            continue
    return out


# ---------------------------------------------------------------- checking an entry against its spec


def check_block(spec: FrameworkSpec, block: Any) -> Any:
    """The framework's own block validated (all defaults when missing); ValueError with one line per
    problem, each naming `config.mmv_zoo.<kind>.<field>`."""
    assert spec.settings is not None
    try:
        return spec.settings.model_validate({} if block is None else block)
    except ValidationError as e:
        where = f"config.mmv_zoo.{spec.kind}"
        lines = [f"{where}.{loc}: {msg}" if loc else f"{where}: {msg}" for loc, msg in problems(e, spec.settings)]
        raise ValueError("\n".join(lines)) from None


def check_framework(entry: Any, spec: FrameworkSpec) -> None:
    """The validated entry against its framework's spec; ValueError starting with the field at fault."""
    mmv = entry.mmv
    values = {"task": mmv.task, "loss": mmv.loss.kind, "layout": mmv.data.layout.layout}
    try:
        spec.accepts.model_validate(values)
    except ValidationError as e:
        field = str(e.errors()[0]["loc"][0])
        raise ValueError(_refusal(spec, field, values)) from None
    if not spec.exclusion_masks and mmv.data.layout.has_exclusion:
        users = _frameworks_where(lambda s: s.exclusion_masks)
        raise ValueError(f"config.mmv_zoo.data.layout: exclusion masks weight the loss of framework {users}; "
                         f"framework {spec.kind} does not use them")
    if spec.manual_optimization:
        t = mmv.training
        used = [name for name, on in (("swa", t.swa is not None), ("ema", t.ema is not None),
                                      ("gradient_clip_val", t.gradient_clip_val),
                                      ("accumulate_grad_batches", t.accumulate_grad_batches > 1)) if on]
        if used:
            raise ValueError(f"config.mmv_zoo.training.{used[0]}: not available for framework {spec.kind} "
                             "(it steps its own optimizers); remove it")
    if spec.rules is not None:
        spec.rules(entry)


def _frameworks_where(test: Callable[[FrameworkSpec], bool], but: str = "") -> str:
    return " or ".join(k for k, s in framework_specs().items() if k != but and test(s)) or "none"


def _refusal(spec: FrameworkSpec, field: str, values: dict[str, str]) -> str:
    value, takes = values[field], spec.takes(field)
    others = _frameworks_where(lambda s: value in s.takes(field), but=spec.kind)
    if field == "task":
        msg = (f"{FIELDS[field]}: {TASK_WORDS.get(value, value)} is trained by framework {others}, not "
               f"{spec.kind!r} ({spec.kind} trains {' or '.join(takes)})")
    elif field == "loss":
        msg = (f"{FIELDS[field]}: task {values['task']} takes the {' or '.join(takes)} loss with framework "
               f"{spec.kind}, not {value!r}")
    else:
        needs = ("needs pairs: layout paired_folders or csv" if set(takes) == set(PAIRED)
                 else f"trains on layout {' or '.join(takes)}")
        what = " (unrelated images, no pairs)" if value == "unpaired_folders" else ""
        msg = f"{FIELDS[field]}: {value}{what} trains {others}; framework {spec.kind} {needs}"
    hint = dict(spec.hints).get(field)
    return msg if hint is None else f"{msg}; {hint}"


# ---------------------------------------------------------------- fcn, the supervised framework


class FCNAccepts(Accepts):
    task: Literal["segmentation", "regression"]
    loss: Literal["cross_entropy", "dice", "dice_ce", "mse", "l1"]
    layout: Literal["paired_folders", "csv"]


FCN = FrameworkSpec(
    kind="fcn",
    model="mmv_zoo.frameworks.fcn:FCN",
    accepts=FCNAccepts,
    exclusion_masks=True,
    description="Supervised image-to-image training (semantic segmentation or regression) of any network.",
)
