"""Fixtures for closed-loop tests: short scenarios near the sign, and patch run directories."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from patchsim.runs import write_image

ROOT = Path(__file__).resolve().parents[2]


def write_patch_run(run: Path, rgba: np.ndarray, slot: str = "stop_face", kind: str = "sign_face",
                    victim: str = "detector:default", scenario: str = "scenarios/stop_sign_approach.yaml",
                    name: str = "grey-poster") -> Path:
    """A minimal attack run directory: patch.json, the RGBA image, config.yaml."""
    run.mkdir(parents=True, exist_ok=True)
    write_image(run / "patch_rgba.png", rgba)
    (run / "patch.json").write_text(json.dumps({"patch_id": name, "victim": victim, "files": {"rgba": "patch_rgba.png"},
                                                "slot": {"name": slot, "kind": kind, "size_m": [0.75, 0.75]}}))
    (run / "config.yaml").write_text(yaml.safe_dump({"heldout": {"scenario": scenario}}))
    return run


@pytest.fixture(scope="session")
def grey_poster(tmp_path_factory) -> Path:
    """A full-face mid-grey poster over the stop sign: the default detector cannot see a stop sign in it."""
    rgba = np.full((64, 64, 4), 128, np.uint8)
    rgba[..., 3] = 255
    return write_patch_run(tmp_path_factory.mktemp("runs") / "grey", rgba)
