"""Errors patchsim raises on bad input.

Every error names what is wrong and where: the file, the key and, for YAML, the line.
"""

from __future__ import annotations

from pathlib import Path


class PatchsimError(Exception):
    """Base class of every error patchsim raises on purpose."""


class ConfigError(PatchsimError, ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range.

    Args:
        message: what is wrong.
        source: the file (or ``"<dict>"``) the value came from.
        key: dotted path of the key, e.g. ``"signs.0.offset_m"``.
        line: 1-based line in ``source``, when known.
    """

    def __init__(self, message: str, source: str | Path = "<dict>", key: str = "", line: int | None = None):
        self.message = message
        self.source = str(source)
        self.key = key
        self.line = line
        where = "" if self.source == "<dict>" else self.source + (f":{line}" if line is not None else "")
        what = f"key '{key}': " if key else ""
        super().__init__(f"{where}: {what}{message}" if where else f"{what}{message}")


class ShapeError(PatchsimError, ValueError):
    """An array or tensor has the wrong shape, dtype or value range."""


class CheckpointError(PatchsimError):
    """A model or run checkpoint is missing, corrupt, or of the wrong kind."""
