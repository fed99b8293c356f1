"""BioImage.IO 0.5 model packages from trained runs: `mmv_zoo.export.package.export_package`.

Importing this package is light; torch and bioimageio are imported when an export runs.
"""

from __future__ import annotations

from ..errors import RunError


class ExportError(RunError):
    """A run cannot be exported, or the package failed validation or bioimageio.core's test."""
