"""Prediction: sources, the engine, tiling with an exact halo, fast CPU inference, 5D files, packages."""
