"""The framework contract: what training, prediction, export and run loading may ask of a framework.

A framework is a LightningModule subclass of `Framework`, described to validation by its
`FrameworkSpec` (`mmv_zoo.settings.framework`: tasks, losses and layouts it takes, its settings block,
its data module, manual optimization, directions), which names this class. Everything else that
mmv_zoo asks of a trained framework is a method here, with the task's behaviour as the default:

- `Framework(entry_dict, slug)`: built from the validated entry (as stored in its checkpoints);
  `self.settings` is its own block (or None), `self.spec` its spec;
- `training_step` / `validation_step` (Lightning), logging `train_loss`, `val_loss` and
  `val_metric`, whose name in plots is `metric_name`; `configure_optimizers` builds the entry's
  optimizer and scheduler (frameworks that step their own override it);
- `inference_model()`: the module prediction and export run (network plus final activation);
- `network()`: the trained network that MMV_Im2Im checkpoints and `init_from` load into;
- `postprocess(options)`: per-tile post-processing and the output channel names;
- `finalize(options)`: whole-image post-processing (instance clustering), or None;
- `for_direction(direction)`: one direction of a framework that has several (`spec.directions`).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from torch import nn

from ..entry import Entry
from ..errors import RunError
from ..settings.framework import FrameworkSpec, framework_spec
from .finish import Finish, task_postprocess
from .optim import build_optimizer, build_scheduler

__all__ = ["Finish", "Framework", "task_postprocess"]

class Framework(pl.LightningModule):
    """Base of every framework; see the module doc for the contract."""

    def __init__(self, entry: dict[str, Any], slug: str | None = None,
                 stored: dict[str, Any] | None = None) -> None:
        """`entry`: the validated entry as a JSON dict (kept in the checkpoints' hyperparameters with
        `slug` and `stored`, extra values a framework keeps there)."""
        super().__init__()

        self.save_hyperparameters({"entry": entry, "slug": slug, **(stored or {})})
        self.entry = Entry.model_validate(entry)
        self.slug = slug or self.entry.slug
        self.automatic_optimization = not self.spec.manual_optimization

    @property
    def spec(self) -> FrameworkSpec:
        """The framework's spec (what validation knows of it)."""
        return framework_spec(self.entry.mmv.framework)

    @property
    def settings(self) -> Any:
        """The framework's own settings block (`config.mmv_zoo.<kind>`), or None."""
        return self.entry.mmv.framework_settings

    @property
    def metric_name(self) -> str:
        """What `val_metric` measures, as plots label it."""
        return "val foreground Dice" if self.entry.mmv.task == "segmentation" else "val Pearson r"

    # ------------------------------------------------------------ what prediction and export run

    def inference_model(self) -> nn.Module:
        """The module prediction and export run: the network plus the task's final activation."""
        raise NotImplementedError(f"framework {self.entry.mmv.framework}: inference_model")

    def network(self) -> nn.Module:
        """The trained network (without final activation) that MMV_Im2Im checkpoints and `init_from`
        load into."""
        raise RunError(f"framework {self.entry.mmv.framework!r} has no single network to load weights into")

    def postprocess(self, options: Any) -> tuple[Finish, list[str]]:
        """Per-tile post-processing of the network output and the output channel names."""
        return task_postprocess(self.entry.mmv.task, list(self.entry.outputs[0].channel_names), options)

    def finalize(self, options: Any) -> Finish | None:
        """Post-processing that needs the whole image at once (what `postprocess` keeps of every tile,
        blended), or None when the tiles are final."""
        return None

    def for_direction(self, direction: str) -> Framework:
        """The model of one direction (its `entry` is that direction's); frameworks with one direction
        refuse (see `spec.directions`)."""
        raise ValueError(f"framework {self.entry.mmv.framework} translates one way only")

    # ------------------------------------------------------------ training

    def configure_optimizers(self) -> Any:
        """The entry's optimizer over every parameter, and its scheduler."""
        t = self.entry.mmv.training
        opt = build_optimizer(t.optimizer, self.parameters())
        sched = build_scheduler(t.scheduler, opt, t.max_epochs)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
