"""CycleGAN: unpaired image-to-image translation (Zhu et al. 2017) with two generators (a2b: the
entry's inputs to its outputs; b2a: back), a PatchGAN discriminator per domain, cycle-consistency
and identity losses and an image pool. Trains on the `unpaired_folders` layout.

Inference runs in either direction: `inference_model(direction)`, and `for_direction(direction)`
gives prediction and export a model whose `entry` describes that direction (for b2a: inputs and
outputs, their normalizations and data folders swapped).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..entry import Entry
from ..nets.factory import build_network
from ..settings.gan import CYCLEGAN
from .adversarial import GANModule, ImagePool, LossParts, build_discriminator
from .base import Framework
from .fcn import InferenceModel, pearson

DIRECTIONS = CYCLEGAN.directions


class CycleGAN(GANModule):
    """Generators `a2b` and `b2a` (the entry's network settings, channels swapped), discriminators
    `disc_a` and `disc_b`. Validation: `val_loss` is the cycle loss, `val_metric` the Pearson
    correlation of each image with its cycled-back version."""

    metric_name = "val cycle Pearson r"
    sample_titles = ("input", "translated", "cycled back")
    sample_note = " (rows: a -> b, then b -> a)"

    def __init__(self, entry: dict[str, Any], slug: str | None = None) -> None:
        super().__init__(entry, slug)
        e, s = self.entry, self.settings
        dims, ca, cb = e.spatial_dims, e.in_channels, e.out_channels
        self.a2b = build_network(e.mmv.network, dims, ca, cb)
        self.b2a = build_network(e.mmv.network, dims, cb, ca)
        self.disc_a = build_discriminator(s.discriminator, dims, ca)
        self.disc_b = build_discriminator(s.discriminator, dims, cb)
        self.generators, self.discriminators = [self.a2b, self.b2a], [self.disc_a, self.disc_b]
        self.identity_weight = s.identity(ca, cb)
        self.pool_a, self.pool_b = ImagePool(s.pool_size), ImagePool(s.pool_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a2b(x)

    def generator_for(self, direction: str) -> nn.Module:
        if direction not in DIRECTIONS:
            raise ValueError(f"direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
        return self.a2b if direction == "a2b" else self.b2a

    def inference_model(self, direction: str = "a2b") -> InferenceModel:
        """The generator of one direction: a2b (the entry's inputs -> outputs) or b2a."""
        return InferenceModel(self.generator_for(direction), softmax=False)

    def network(self) -> nn.Module:
        """The generator of the entry's direction (a2b: its inputs -> its outputs)."""
        return self.a2b

    def for_direction(self, direction: str) -> DirectedModel:
        """The model of one direction as prediction and export take it (`entry`, `inference_model()`)."""
        return DirectedModel(self, direction)

    # ------------------------------------------------------------ training

    def generate(self, batch: Any) -> dict[str, torch.Tensor]:
        a, b = batch
        fake_b, fake_a = self.a2b(a), self.b2a(b)
        return {"fake_b": fake_b, "fake_a": fake_a}

    def discriminator_loss(self, batch: Any, fakes: dict[str, torch.Tensor]) -> torch.Tensor:
        a, b = batch
        loss_a = self.adversarial.discriminator(self.disc_a(a), self.disc_a(self.pool_a.query(fakes["fake_a"])))
        loss_b = self.adversarial.discriminator(self.disc_b(b), self.disc_b(self.pool_b.query(fakes["fake_b"])))
        return loss_a + loss_b

    def generator_loss(self, batch: Any, fakes: dict[str, torch.Tensor]) -> LossParts:
        a, b = batch
        s = self.settings
        fake_a, fake_b = fakes["fake_a"], fakes["fake_b"]
        adv = self.adversarial.generator(self.disc_b(fake_b)) + self.adversarial.generator(self.disc_a(fake_a))
        cycle = self.loss_fn(self.b2a(fake_b), a) + self.loss_fn(self.a2b(fake_a), b)
        total = s.adversarial_weight * adv + s.cycle_weight * cycle
        parts = {"adversarial_g": adv, "cycle": cycle}
        if self.identity_weight > 0:
            identity = self.loss_fn(self.b2a(a), a) + self.loss_fn(self.a2b(b), b)
            total = total + s.cycle_weight * self.identity_weight * identity
            parts["identity"] = identity
        return total, parts

    def validation_outputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
        a, b = batch
        fake_b, fake_a = self.a2b(a), self.b2a(b)
        rec_a, rec_b = self.b2a(fake_b), self.a2b(fake_a)
        loss = self.loss_fn(rec_a, a) + self.loss_fn(rec_b, b)
        metric = (pearson(rec_a, a) + pearson(rec_b, b)) / 2
        return loss, metric, [[a, fake_b, rec_a], [b, fake_a, rec_b]]


class DirectedModel(Framework):
    """One direction of a CycleGAN: its generator, and an `entry` whose inputs are that direction's."""

    def __init__(self, model: CycleGAN, direction: str) -> None:
        directed = directed_entry(model.entry, direction)
        super().__init__(directed.model_dump(mode="json"), slug=f"{model.slug}_{direction}")
        self.entry = directed
        self.generator = model.generator_for(direction)
        self.direction = direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.generator(x)

    def inference_model(self) -> InferenceModel:
        return InferenceModel(self.generator, softmax=False)

    def network(self) -> nn.Module:
        return self.generator


def directed_entry(entry: Any, direction: str) -> Any:
    """The entry as one direction's model: a2b unchanged but named; b2a with inputs and outputs (their
    channels, normalizations and data folders) swapped. Space axes (scale, unit) stay the input's."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction {direction!r}; valid: {', '.join(DIRECTIONS)}")
    data = entry.model_dump(mode="json", exclude_none=True)
    data["name"] = f"{entry.name} ({direction})"[:128]
    if entry.id:
        data["id"] = f"{entry.id}_{direction}"
    data["config"]["mmv_zoo"].pop("pretrained", None)
    if direction == "b2a":
        inp, out = data["inputs"][0], data["outputs"][0]
        space_in, space_out = inp["axes"][2:], out["axes"][2:]
        data["inputs"][0] = {**out, "axes": [*out["axes"][:2], *space_in]}
        data["outputs"][0] = {**inp, "axes": [*inp["axes"][:2], *space_out]}
        data["description"] = (f"Direction b2a of a CycleGAN: {out['id']} -> {inp['id']}. "
                               + data["description"].strip())
        mmv = data["config"]["mmv_zoo"]
        norm = mmv["data"]["normalization"]
        norm["source"], norm["target"] = norm["target"], norm["source"]
        layout = mmv["data"]["layout"]
        layout["source"], layout["target"] = layout["target"], layout["source"]
    directed = Entry.model_validate(data)
    directed._source = entry.source
    return directed
