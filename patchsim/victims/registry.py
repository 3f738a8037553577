"""Victim models by name: ``detector:default``, ``detector:hardened``, ``lanekeeper:pilotnet``,
``lanekeeper:lanenet``, ``lanekeeper:pilotnet-hardened``, or a path.

Shipped weights live in ``patchsim/assets/weights`` and are reproduced by the commands in
``patchsim/assets/weights/README.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchsim.errors import CheckpointError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "assets" / "weights"

SHIPPED: dict[str, dict[str, str]] = {
    "detector": {"default": "detector_default.pt", "hardened": "detector_hardened.pt"},
    "lanekeeper": {"pilotnet": "lanekeeper_pilotnet.pt", "lanenet": "lanekeeper_lanenet.pt",
                   "pilotnet-hardened": "lanekeeper_pilotnet_hardened.pt"},
}


def resolve_weights(spec: str | Path, kind: str) -> Path:
    """The file behind a victim spec.

    Raises:
        CheckpointError: an unknown shipped name, or a spec for another kind of victim.
    """
    text = str(spec)
    prefix, sep, name = text.partition(":")
    if sep and prefix in SHIPPED and "/" not in prefix:
        if prefix != kind:
            raise CheckpointError(f"{text!r} names a {prefix}, but a {kind} is needed here")
        if name not in SHIPPED[kind]:
            raise CheckpointError(f"{kind}:{name}: no shipped {kind} of that name "
                                  f"(shipped: {', '.join(f'{kind}:{n}' for n in SHIPPED[kind])}, or a checkpoint path)")
        return WEIGHTS_DIR / SHIPPED[kind][name]
    return Path(text).expanduser()


def load_victim(spec: str | Path, device: str = "cpu", **kwargs: Any):
    """Load a detector or lane-keeper by spec; a bare path is tried as a detector, then a lane-keeper."""
    text = str(spec)
    if text.startswith("detector:"):
        from patchsim.victims.detector import load_detector

        return load_detector(spec, device=device, **kwargs)
    if text.startswith("lanekeeper:"):
        from patchsim.victims.lanekeeper import load_lanekeeper

        return load_lanekeeper(spec, device=device, **kwargs)
    from patchsim.victims.detector import load_detector
    from patchsim.victims.lanekeeper import is_lanekeeper_checkpoint, load_lanekeeper

    if is_lanekeeper_checkpoint(Path(text)):
        return load_lanekeeper(spec, device=device, **kwargs)
    return load_detector(spec, device=device, **kwargs)
