"""`patchsim scenario run` and `validate`: results.json, plots and videos of clean vs patched runs."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from patchsim.cli import app
from patchsim.closedloop.outcomes import BAND_NAMES


def test_scenario_run_writes_results_plots_and_videos(tmp_path, near_stop_scenario, grey_poster):
    out = tmp_path / "run"
    r = CliRunner().invoke(app, ["scenario", "run", str(near_stop_scenario), "--patch", str(grey_poster), "--seeds", "1",
                                 "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "stopped_before_line rate" in r.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["driver"] == "planner" and doc["victim"] == "detector:default" and doc["patches"] == ["grey-poster"]
    assert doc["seeds"] == [0] and doc["simulator"] == {"backend": "embedded"}
    assert doc["planner"]["confirm_k"] == 2 and doc["planner"]["confirm_n"] == 3
    assert {e["job"]["variant"] for e in doc["episodes"]} == {"clean", "grey-poster"}
    for e in doc["episodes"]:
        assert e["frames"] and set(e["outcome"]["detection_rate_by_band"]) == set(BAND_NAMES)
    assert doc["variants"]["clean"]["stopped_before_line"]["k"] == 1
    assert doc["variants"]["grey-poster"]["ran_stop_sign"]["k"] == 1
    assert (out / "detection_vs_distance.png").is_file() and (out / "lateral_offset_vs_time.png").is_file()
    assert sorted(p.name for p in (out / "videos").glob("*.mp4")) == ["clean_c0_s0.mp4", "grey-poster_c0_s0.mp4"]


def test_validate_uses_the_attack_scenario_and_a_missing_slot_is_named(tmp_path, near_stop_scenario, grey_poster):
    r = CliRunner().invoke(app, ["validate", str(grey_poster), "--seeds", "1", "--scenario", str(near_stop_scenario),
                                 "--out", str(tmp_path / "v"), "--videos", "0"])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "v" / "results.json").read_text())["variants"]["grey-poster"]["ran_stop_sign"]["k"] == 1
    r = CliRunner().invoke(app, ["validate", str(grey_poster), "--scenario", "scenarios/lane_keep_straight.yaml",
                                 "--out", str(tmp_path / "w")])
    assert r.exit_code == 2 and "slot 'stop_face'" in r.output and "lane_keep_straight.yaml" in r.output
