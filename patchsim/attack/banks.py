"""The scene banks of an attack (training and held-out), kept in the shared cache (``patchsim cache``)
under a key of everything they depend on."""

from __future__ import annotations

from pathlib import Path

import torch

from patchsim.attack.config import AttackConfig
from patchsim.config import to_dict
from patchsim.eot.scenes import SceneBank, build_sim_bank, load_photo_bank
from patchsim.runs import atomic_path


def bank_key(cfg: AttackConfig) -> str:
    """What the scene banks depend on: their configs, the scenario files' text, the photos' corner
    files, the source class (photo banks), and the code that renders them."""
    from patchsim.cache import cache_key

    inputs = []
    for sc in (cfg.scenes, cfg.heldout):
        if sc.photos:
            corners = Path(sc.photos) / "corners.json"
            inputs.append(corners.read_text() if corners.is_file() else None)
        else:
            scenario = Path(sc.scenario)
            inputs.append(scenario.read_text() if scenario.is_file() else None)
    return cache_key(to_dict(cfg.scenes), to_dict(cfg.heldout), cfg.source_class, inputs, _render_code_version())


def _render_code_version() -> str:
    """A hash of the source that renders scene banks (the simulator and the bank builder)."""
    import hashlib

    root = Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for f in sorted([*(root / "sim").glob("*.py"), root / "eot" / "scenes.py"]):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:16]


def scene_banks(cfg: AttackConfig, progress: bool = False) -> tuple[SceneBank, SceneBank, str]:
    """The training and held-out scene banks, from the shared cache when an identical configuration
    made them before (``patchsim cache``), else built and cached. Returns them and the cache key."""
    import sys

    from patchsim.cache import entry_path

    key = bank_key(cfg)
    path = entry_path("scenes", key)
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            return SceneBank.from_dict(data["train"]), SceneBank.from_dict(data["heldout"]), key
        except Exception as exc:  # a damaged cache entry is rebuilt, not trusted
            print(f"scene banks: the cached copy {path} is unreadable ({type(exc).__name__}); building them again",
                  file=sys.stderr)
    elif progress:
        print(f"scene banks: none cached for this configuration and code; building them ({path.name})",
              file=sys.stderr)
    banks = []
    for sc in (cfg.scenes, cfg.heldout):
        if sc.photos:
            from patchsim.sim.scenario import SIGN_FACE_SIZE_M

            kind = cfg.source_class if cfg.source_class in SIGN_FACE_SIZE_M else "stop_sign"
            banks.append(load_photo_bank(sc.photos, SIGN_FACE_SIZE_M[kind], kind))
        else:
            banks.append(build_sim_bank(sc))
    with atomic_path(path) as tmp:
        torch.save({"train": banks[0].to_dict(), "heldout": banks[1].to_dict()}, tmp)
    return banks[0], banks[1], key
