"""Errors a user can act on: the CLI prints them as one line (no traceback unless --debug)."""

from __future__ import annotations


class MmvZooError(Exception):
    """Base class: the message names the file and the field or value at fault."""


class EntryError(MmvZooError):
    """A zoo entry (rdf.yaml) or an override is invalid."""


class DataError(MmvZooError):
    """Training or prediction data is missing, unreadable or does not fit the entry."""


class RunError(MmvZooError):
    """A run folder, checkpoint or package is missing or unusable."""


class OutputError(MmvZooError):
    """An output cannot be written."""


class DownloadError(MmvZooError):
    """A file could not be downloaded, verified, found offline or extracted; the message names it."""
