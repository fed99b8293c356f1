"""Training-loop overhead: mmv_zoo's FCN under the Lightning Trainer against a bare PyTorch loop,
same network, same batches, same optimizer, in one run.

    .venv/bin/python bench/train_overhead.py [--steps 30] [--batch 8] [--size 128]

Prints steps/s of both and the ratio (target in DESIGN.md: Lightning >= 0.9x the bare loop).
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, TensorDataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    args = ap.parse_args()

    import pytorch_lightning as pl

    from mmv_zoo.entry import load_entry
    from mmv_zoo.frameworks.fcn import FCN

    entry = load_entry("nuclei_semseg_2d", [f"data.patch=[{args.size},{args.size}]"])
    n = args.steps * args.batch
    x = torch.randn(n, 1, args.size, args.size)
    y = (torch.rand(n, 1, args.size, args.size) > 0.7).long()
    loader = DataLoader(TensorDataset(x, y), batch_size=args.batch, shuffle=False)

    # bare loop
    torch.manual_seed(0)
    model = FCN(entry.model_dump(mode="json"))
    opt = model.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    model.train()
    for i, (xb, yb) in enumerate(loader):  # one warm-up step outside the timing
        opt.zero_grad()
        model.loss_fn(model(xb), yb).backward()
        opt.step()
        if i == 0:
            break
    t0 = time.perf_counter()
    for xb, yb in loader:
        opt.zero_grad()
        model.loss_fn(model(xb), yb).backward()
        opt.step()
    bare = time.perf_counter() - t0

    # Lightning
    torch.manual_seed(0)
    model = FCN(entry.model_dump(mode="json"))
    trainer = pl.Trainer(accelerator="auto", devices=1, max_epochs=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(x[: args.batch], y[: args.batch]),
                                                     batch_size=args.batch))  # warm-up
    model = FCN(entry.model_dump(mode="json"))
    trainer = pl.Trainer(accelerator="auto", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    t0 = time.perf_counter()
    trainer.fit(model, train_dataloaders=loader)
    light = time.perf_counter() - t0

    print(f"network fnet depth 3 x16, batch {args.batch}x1x{args.size}x{args.size}, {args.steps} steps, "
          f"device {trainer.strategy.root_device}")
    print(f"bare PyTorch loop   {args.steps / bare:7.2f} steps/s")
    print(f"Lightning (FCN)     {args.steps / light:7.2f} steps/s")
    print(f"ratio Lightning/bare {bare / light:.2f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
