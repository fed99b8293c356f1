"""What pix2pix and CycleGAN share: adversarial losses, the image pool, the sample grid, and a
LightningModule base with manual optimization (one optimizer for the generator(s), one for the
discriminator(s), each step updating only its own side)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..nets.patchgan import PatchGAN
from .base import Framework
from .losses import build_loss
from .optim import build_optimizer, build_scheduler

Backward = Callable[[torch.Tensor], None]
LossParts = tuple[torch.Tensor, dict[str, torch.Tensor]]
"""A generator loss and its named terms (logged as train_<name>)."""


class AdversarialLoss(nn.Module):
    """`vanilla` (BCE on logits), `lsgan` (least squares) or `hinge`, for both players."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        if kind not in ("vanilla", "lsgan", "hinge"):
            raise ValueError(f"unknown adversarial loss {kind!r}; valid: 'vanilla', 'lsgan', 'hinge'")
        self.kind = kind

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """Loss of the discriminator's scores on real and on generated images (halved, as in pix2pix)."""
        if self.kind == "hinge":
            return 0.5 * (torch.relu(1 - real).mean() + torch.relu(1 + fake).mean())
        return 0.5 * (self._target(real, 1.0) + self._target(fake, 0.0))

    def generator(self, fake: torch.Tensor) -> torch.Tensor:
        """Loss of the generator: the discriminator's scores on its images should read `real`."""
        if self.kind == "hinge":
            return -fake.mean()
        return self._target(fake, 1.0)

    def _target(self, scores: torch.Tensor, value: float) -> torch.Tensor:
        target = torch.full_like(scores, value)
        if self.kind == "vanilla":
            return nn.functional.binary_cross_entropy_with_logits(scores, target)
        return nn.functional.mse_loss(scores, target)


class ImagePool:
    """Up to `size` earlier generated images; a query returns each new image or, half the time once
    the pool is full, an older one in its place (Shrivastava et al. 2017). Size 0: no pool."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.images: list[torch.Tensor] = []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for img in images:
            img = img[None]
            if len(self.images) < self.size:
                self.images.append(img)
                out.append(img)
            elif torch.rand(()) < 0.5:
                i = int(torch.randint(0, self.size, ()))
                out.append(self.images[i].clone())
                self.images[i] = img
            else:
                out.append(img)
        return torch.cat(out)


def set_requires_grad(modules: Iterable[nn.Module], flag: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(flag)


def build_discriminator(settings: Any, spatial_dims: int, in_channels: int) -> nn.Module:
    """A PatchGAN from `config.mmv_zoo.<framework>.discriminator`, weights N(0, 0.02) as in pix2pix."""
    net = PatchGAN(spatial_dims, in_channels, channels=settings.channels, depth=settings.depth, norm=settings.norm,
                   anisotropic_z=settings.anisotropic_z)
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.Conv3d):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d | nn.BatchNorm3d | nn.InstanceNorm2d | nn.InstanceNorm3d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return net


# ---------------------------------------------------------------- sample grid


def _plane(x: np.ndarray) -> np.ndarray:
    """(Y, X) display plane of a (C, [Z], Y, X) array: first channel, middle slice."""
    a = x[0]
    return a[a.shape[0] // 2] if a.ndim == 3 else a


def write_sample_grid(path: Path, rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str],
                      suptitle: str = "") -> Path:
    """A PNG grid, one row per sample and one column per title (first channel, middle z slice; one
    grey scale per row, so output and target compare); written under a temporary name, then renamed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, m = len(rows), len(titles)
    fig, axes = plt.subplots(n, m, figsize=(2.2 * m, 2.2 * n + 0.4), squeeze=False)
    for i, row in enumerate(rows):
        planes = [_plane(img) for img in row]
        lo, hi = np.percentile(np.concatenate([p.ravel() for p in planes]), (0.5, 99.5))
        for j, plane in enumerate(planes):
            ax = axes[i][j]
            ax.imshow(plane, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-6), interpolation="nearest")
            ax.axis("off")
            if i == 0:
                ax.set_title(titles[j], fontsize=9)
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.4 / fig.get_figheight()))
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.stem}.partial-{os.getpid()}.png")
    try:
        fig.savefig(partial, dpi=80)
        os.replace(partial, path)
    finally:
        plt.close(fig)
        partial.unlink(missing_ok=True)
    return path


# ---------------------------------------------------------------- the shared LightningModule


class GANModule(Framework):
    """Base of the GAN frameworks: manual optimization with a generator and a discriminator optimizer.

    Subclasses set `generators` and `discriminators` (lists of modules) and implement `generate`,
    `discriminator_loss`, `generator_loss` and `validation_outputs`. Each training step first
    updates the discriminator(s) on detached generated images, then the generator(s) with the
    discriminator(s) frozen; logs `train_loss_d`, `train_loss_g` (also as `train_loss`) and the
    generator's terms; every `sample_every` epochs writes `samples/epoch_NNNN.png` into the run folder.
    """

    metric_name = "val_metric"
    sample_titles: tuple[str, ...] = ("input", "output", "target")
    sample_note = ""

    def __init__(self, entry: dict[str, Any], slug: str | None = None, stored: dict[str, Any] | None = None) -> None:
        super().__init__(entry, slug, stored)
        self.adversarial = AdversarialLoss(self.settings.adversarial)
        self.loss_fn = build_loss(self.entry.mmv.loss)
        self.generators: list[nn.Module] = []
        self.discriminators: list[nn.Module] = []
        self._samples: list[list[np.ndarray]] = []

    # ------------------------------------------------------------ to implement

    def generate(self, batch: Any) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def discriminator_loss(self, batch: Any, fakes: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def generator_loss(self, batch: Any, fakes: dict[str, torch.Tensor]) -> LossParts:
        raise NotImplementedError

    def validation_outputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, list[list[torch.Tensor]]]:
        """(val_loss, val_metric, sample rows: one list of (B, C, ...) tensors per grid row group)."""
        raise NotImplementedError

    # ------------------------------------------------------------ the two updates

    def discriminator_update(self, batch: Any, fakes: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                             backward: Backward | None = None) -> torch.Tensor:
        """One step of the discriminator optimizer; the generators' weights are not touched."""
        detached = {k: v.detach() for k, v in fakes.items()}
        loss = self.discriminator_loss(batch, detached)
        optimizer.zero_grad(set_to_none=True)
        (backward or torch.Tensor.backward)(loss)
        optimizer.step()
        return loss.detach()

    def generator_update(self, batch: Any, fakes: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer,
                         backward: Backward | None = None) -> LossParts:
        """One step of the generator optimizer with the discriminators frozen (they get no gradient)."""
        set_requires_grad(self.discriminators, False)
        try:
            loss, parts = self.generator_loss(batch, fakes)
            optimizer.zero_grad(set_to_none=True)
            (backward or torch.Tensor.backward)(loss)
            optimizer.step()
        finally:
            set_requires_grad(self.discriminators, True)
        return loss.detach(), {k: v.detach() for k, v in parts.items()}

    def training_step(self, batch: Any, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        fakes = self.generate(batch)
        loss_d = self.discriminator_update(batch, fakes, opt_d, self.manual_backward)
        loss_g, parts = self.generator_update(batch, fakes, opt_g, self.manual_backward)
        n = batch[0].shape[0]
        log = dict(on_step=False, on_epoch=True, batch_size=n)
        self.log("train_loss_d", loss_d, prog_bar=True, **log)
        self.log("train_loss_g", loss_g, prog_bar=True, **log)
        self.log("train_loss", loss_g, **log)
        for key, value in parts.items():
            self.log(f"train_{key}", value, **log)

    # ------------------------------------------------------------ validation and samples

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        loss, metric, groups = self.validation_outputs(batch)
        n = batch[0].shape[0]
        self.log("val_loss", loss, prog_bar=True, batch_size=n)
        self.log("val_metric", metric, prog_bar=True, batch_size=n)
        if batch_idx == 0:
            self._samples = []
            for group in groups:
                arrays = [t.detach().float().cpu().numpy() for t in group]
                for i in range(min(n, self.settings.samples)):
                    self._samples.append([a[i] for a in arrays])

    def on_validation_epoch_end(self) -> None:
        trainer = self.trainer
        if trainer.sanity_checking or not self._samples:
            return
        epoch = self.current_epoch
        due = (epoch + 1) % self.settings.sample_every == 0 or epoch + 1 >= (trainer.max_epochs or 0)
        if due:
            folder = Path(trainer.default_root_dir) / "samples"
            write_sample_grid(folder / f"epoch_{epoch:04d}.png", self._samples, self.sample_titles,
                              f"{self.slug}: epoch {epoch}{self.sample_note}")
        self._samples = []

    # ------------------------------------------------------------ optimizers

    def configure_optimizers(self) -> Any:
        t = self.entry.mmv.training
        opt_g = build_optimizer(t.optimizer, [p for g in self.generators for p in g.parameters()])
        opt_d = build_optimizer(self.settings.discriminator_optimizer or t.optimizer,
                                [p for d in self.discriminators for p in d.parameters()])
        scheds = [s for s in (build_scheduler(t.scheduler, o, t.max_epochs) for o in (opt_g, opt_d)) if s]
        return [opt_g, opt_d], scheds

    def on_train_epoch_end(self) -> None:
        """Manual optimization steps the schedulers itself: once per epoch (plateau: on val_loss)."""
        scheds = self.lr_schedulers()
        if scheds is None:
            return
        for s in scheds if isinstance(scheds, list) else [scheds]:
            if isinstance(s, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = self.trainer.callback_metrics.get("val_loss")
                if value is not None:
                    s.step(value)
            else:
                s.step()
