"""Frameworks: one LightningModule per way of training (fcn, pix2pix, cyclegan, embedseg), losses, optimizers."""
