"""pix2pix: paired image-to-image translation with a generator (any registered network) trained
against a PatchGAN discriminator plus a weighted reconstruction loss (Isola et al. 2017).

`config.mmv_zoo.pix2pix.init_from` starts the generator from a trained run of the same network
(e.g. an fcn run: the MMV_Im2Im paper's best labelfree recipe); the run is checked and loaded when
the module is built, before any run folder exists, and the stored entry then no longer names it
(a reloaded checkpoint has its own weights).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..entry import Entry
from ..errors import EntryError, RunError
from ..nets.factory import build_network, network_recipe
from ..run import load_model
from .adversarial import GANModule, LossParts, build_discriminator
from .fcn import InferenceModel, pearson

INIT_FIELD = "config.mmv_zoo.pix2pix.init_from"


class Pix2Pix(GANModule):
    """Generator = the entry's network; discriminator = PatchGAN on (input, output) pairs."""

    metric_name = "val Pearson r"

    def __init__(self, entry: dict[str, Any], slug: str | None = None) -> None:
        init_from = Entry.model_validate(entry).mmv.pix2pix.init_from
        stored = None
        if init_from is not None:  # the checkpoint keeps its own weights: never reload the run later
            entry = copy.deepcopy(entry)
            entry["config"]["mmv_zoo"]["pix2pix"]["init_from"] = None
            stored = {"initialized_from": str(Path(init_from).resolve())}
        super().__init__(entry, slug, stored)
        e, s = self.entry, self.settings
        self.generator = build_network(e.mmv.network, e.spatial_dims, e.in_channels, e.out_channels)
        d_in = e.in_channels + e.out_channels if s.conditional else e.out_channels
        self.discriminator = build_discriminator(s.discriminator, e.spatial_dims, d_in)
        self.generators, self.discriminators = [self.generator], [self.discriminator]
        if init_from is not None:
            load_generator(self.generator, init_from, e)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def inference_model(self) -> InferenceModel:
        return InferenceModel(self.generator, softmax=False)

    def network(self) -> nn.Module:
        return self.generator

    def _judge(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.discriminator(torch.cat([x, y], 1) if self.settings.conditional else y)

    def generate(self, batch: Any) -> dict[str, torch.Tensor]:
        x, _ = batch
        return {"fake": self.generator(x)}

    def discriminator_loss(self, batch: Any, fakes: dict[str, torch.Tensor]) -> torch.Tensor:
        x, y = batch
        return self.adversarial.discriminator(self._judge(x, y), self._judge(x, fakes["fake"]))

    def generator_loss(self, batch: Any, fakes: dict[str, torch.Tensor]) -> LossParts:
        x, y = batch
        adv = self.adversarial.generator(self._judge(x, fakes["fake"]))
        rec = self.loss_fn(fakes["fake"], y)
        total = self.settings.adversarial_weight * adv + self.settings.reconstruction_weight * rec
        return total, {"adversarial_g": adv, "reconstruction": rec}

    def validation_outputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
        x, y = batch
        out = self.generator(x)
        return self.loss_fn(out, y), pearson(out, y), [[x, out, y]]


def load_generator(generator: nn.Module, source: str | Path, entry: Any) -> None:
    """Copy the network of the trained run `source` into `generator` (same network, channels and
    dimensions, strictly); EntryError naming `init_from` and the difference otherwise."""
    try:
        trained = load_model(source)
    except RunError as e:
        raise EntryError(f"{INIT_FIELD}: {e}") from None
    theirs = trained.entry
    if theirs.mmv.task != "regression":
        raise EntryError(f"{INIT_FIELD}: {source} is a {theirs.mmv.task} run (its network outputs class scores); "
                         "the generator can start only from a regression run")
    mine = network_recipe(entry.mmv.network, entry.spatial_dims, entry.in_channels, entry.out_channels)
    other = network_recipe(theirs.mmv.network, theirs.spatial_dims, theirs.in_channels, theirs.out_channels)
    if (mine.module, mine.callable) != (other.module, other.callable):
        raise EntryError(f"{INIT_FIELD}: {source} trained network {theirs.mmv.network.kind!r} ({other.callable}), "
                         f"this entry's generator is {entry.mmv.network.kind!r} ({mine.callable}); they must match")
    if mine.kwargs != other.kwargs:
        diffs = [f"{k} {other.kwargs.get(k)!r} (run) vs {mine.kwargs.get(k)!r} (entry)"
                 for k in sorted(set(mine.kwargs) | set(other.kwargs)) if mine.kwargs.get(k) != other.kwargs.get(k)]
        raise EntryError(f"{INIT_FIELD}: {source} trained a different {entry.mmv.network.kind} network: "
                         f"{'; '.join(diffs)}; the generator must match it")
    net = trained.network()
    try:
        generator.load_state_dict(net.state_dict(), strict=True)
    except RuntimeError as e:
        raise EntryError(f"{INIT_FIELD}: {source}: the run's weights do not fit the generator "
                         f"({str(e).splitlines()[0]})") from None
