"""Normalizations of images (percentile, standard, center, foreground) and Macenko stain normalization."""
