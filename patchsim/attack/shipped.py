"""The shipped attack configs (``patchsim/defaults``), by name; light to import (the CLI's help lists them)."""

from __future__ import annotations

from pathlib import Path

DEFAULTS_DIR = Path(__file__).resolve().parent.parent / "defaults"


def shipped_configs() -> list[str]:
    """The names ``patchsim attack --config NAME`` accepts for the shipped configs."""
    return sorted(f.stem for f in DEFAULTS_DIR.glob("*.yaml"))
