"""`patchsim pipeline` end to end on a tiny configuration: attack, held-out closed-loop sweep, PDF."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from patchsim.cli import app
from patchsim.config import to_dict
from tests.attack.test_attack import _tiny


def test_pipeline_end_to_end(tmp_path, near_stop_scenario):
    cfg = _tiny()
    cfg.steps = 4
    attack_file = tmp_path / "tiny_attack.yaml"
    attack_file.write_text(yaml.safe_dump(to_dict(cfg)))
    sweep = tmp_path / "tiny_sweep.yaml"
    sweep.write_text(yaml.safe_dump({"name": "tiny", "scenario": str(near_stop_scenario), "seeds": 1,
                                     "random": {"lighting.preset": ["dusk", "overcast"]}, "samples": 3,
                                     "videos": 0}))
    out = tmp_path / "demo"
    r = CliRunner().invoke(app, ["pipeline", "--out", str(out), "--config", str(attack_file), "--sweep", str(sweep),
                                 "--heldout-seeds", "1", "--workers", "1", "--printables", str(tmp_path / "printables"),
                                 "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "stopped_before_line rate" in r.output and "clean" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["heldout"]["episodes"] == 2  # one held-out condition, clean and patched
    assert set(summary["heldout"]["variants"]) == {"clean", f"{cfg.name}-s{cfg.seed}"}
    assert (out / "heldout" / "report.html").is_file() and (out / "attack" / "patch.png").is_file()
    assert (tmp_path / "printables" / f"{cfg.name}.pdf").read_bytes().startswith(b"%PDF")
