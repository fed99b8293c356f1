"""mmv_zoo: declarative deep-learning image-to-image transformation for microscopy.

Kept light on purpose: torch, Lightning and MONAI are imported where they are used.
"""

__version__ = "0.1.0"
