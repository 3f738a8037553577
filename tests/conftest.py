"""Shared fixtures. Tests render with the real built-in simulator; scenes are kept small for speed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")


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
