"""Shared fixtures. Tests render with the real built-in simulator; scenes are kept small for speed."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
# the shared cache of this test session (scene banks), apart from the user's
os.environ["PATCHSIM_CACHE"] = tempfile.mkdtemp(prefix="patchsim-test-cache-")


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch):
    """Run every test from the repository root, where scenarios/ and printables/ live."""
    monkeypatch.chdir(ROOT)


@pytest.fixture(scope="session")
def sim():
    from patchsim.sim.embedded import EmbeddedSimulator

    s = EmbeddedSimulator(labels=True)
    yield s
    s.close()


@pytest.fixture()
def stop_scenario():
    from patchsim.sim.scenario import load_scenario

    return load_scenario(ROOT / "scenarios" / "stop_sign_approach.yaml")


@pytest.fixture(scope="session")
def near_stop_scenario(tmp_path_factory) -> Path:
    """The stop-sign approach starting with the camera 30 m from the sign (shorter episodes)."""
    data = yaml.safe_load((ROOT / "scenarios" / "stop_sign_approach.yaml").read_text())
    data["ego"]["start_s_m"] = 48.8
    data["duration_s"] = 8.0
    data["distractors"] = {"buildings_per_100m": 1.0, "trees_per_100m": 2.0}
    path = tmp_path_factory.mktemp("scenarios") / "near_stop.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
