"""Patches for closed-loop runs: read from an attack run directory and matched to a scenario's slot."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchsim.config import read_json
from patchsim.errors import ConfigError
from patchsim.sim.scenario import Scenario


@dataclass
class PatchRef:
    """A patch image and what it was made for.

    Attributes:
        name: the patch id (``patch.json``'s ``patch_id``), used to name results.
        slot: the patch slot it goes on; ``slot_kind`` is ``sign_face`` or ``road``.
        victim: the victim spec it was optimized against.
        rgba: (H, W, 4) uint8.
        path: the run directory (or ``patch.json``) it came from.
    """

    name: str
    slot: str
    slot_kind: str
    victim: str
    rgba: np.ndarray
    path: str


def load_patch(source: str | Path) -> PatchRef:
    """Read an attack run directory (or its ``patch.json``).

    Raises:
        ConfigError: missing or malformed ``patch.json``, or a missing patch image, naming the file.
    """
    src = Path(source)
    doc_path = src / "patch.json" if src.is_dir() or not src.suffix else src
    if not src.exists():
        raise ConfigError("patch not found: expected an attack run directory or its patch.json", src)
    doc = read_json(doc_path, "patch.json")
    try:
        name, slot, kind = str(doc["patch_id"]), str(doc["slot"]["name"]), str(doc["slot"]["kind"])
        victim, rel = str(doc["victim"]), str(doc["files"]["rgba"])
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"not a patchsim patch description: missing {exc}", doc_path) from exc
    rgba = read_rgba(doc_path.parent / rel)
    if rgba is None:
        raise ConfigError(f"patch image {rel!r} is missing or not an RGB(A) image", doc_path, "files.rgba")
    return PatchRef(name, slot, kind, victim, rgba, str(src))


def read_rgba(path: str | Path) -> np.ndarray | None:
    """(H, W, 4) uint8 RGBA of an RGB or RGBA image file (opaque when it has no alpha); None when the file
    is missing or not such an image."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None or img.ndim != 3 or img.shape[2] not in (3, 4):
        return None
    return cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA if img.shape[2] == 4 else cv2.COLOR_BGR2RGBA)


def check_slot(patch: PatchRef, scenario: Scenario, scenario_source: str) -> None:
    """The scenario must have the patch's slot, of the same kind.

    Raises:
        ConfigError: naming the scenario file, the slot and the slots it has.
    """
    slots = {p.name: p for p in scenario.patch_slots}
    if patch.slot not in slots:
        raise ConfigError(f"patch {patch.name!r} goes on slot {patch.slot!r}, which this scenario does not have "
                          f"(slots: {', '.join(slots) or 'none'})", scenario_source, "patch_slots")
    if slots[patch.slot].kind != patch.slot_kind:
        raise ConfigError(f"patch {patch.name!r} is for a {patch.slot_kind} slot, but slot {patch.slot!r} is a "
                          f"{slots[patch.slot].kind} slot", scenario_source, "patch_slots")
