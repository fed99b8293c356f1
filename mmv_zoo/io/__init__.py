"""Image files: lazy reading of 2D-5D images (bioio) and atomic OME-TIFF / OME-Zarr writing."""
