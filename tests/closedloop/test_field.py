"""`patchsim field` on drive-by videos made by `patchsim sim render`: clean, the sign is confirmed;
behind a full-face grey poster, it is not."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from patchsim.cli import app


def test_field_test_on_rendered_drive_bys(tmp_path, near_stop_scenario, grey_poster):
    runner = CliRunner()
    clean_video = tmp_path / "clean"
    r = runner.invoke(app, ["sim", "render", str(near_stop_scenario), "--out", str(clean_video), "--steps", "40",
                            "--no-frames"])
    assert r.exit_code == 0, r.output
    grey_video = tmp_path / "grey"
    r = runner.invoke(app, ["sim", "render", str(near_stop_scenario), "--out", str(grey_video), "--steps", "40",
                            "--no-frames", "--patch", str(grey_poster / "patch_rgba.png"), "--slot", "stop_face"])
    assert r.exit_code == 0, r.output

    r = runner.invoke(app, ["field", str(clean_video / "video.mp4"), "--out", str(tmp_path / "f_clean")])
    assert r.exit_code == 0, r.output
    clean = json.loads((tmp_path / "f_clean" / "results.json").read_text())
    assert len(clean["frames"]) == 40 and clean["fps"] == 20.0
    assert clean["summary"]["stop_confirmed"] and clean["summary"]["detection_rate"] > 0.8
    assert any(v is not None for v in clean["summary"]["detection_rate_by_size"].values())
    assert (tmp_path / "f_clean" / "video.mp4").stat().st_size > 0
    assert (tmp_path / "f_clean" / "detection_over_time.png").is_file()

    r = runner.invoke(app, ["field", str(grey_video / "video.mp4"), "--out", str(tmp_path / "f_grey")])
    assert r.exit_code == 0, r.output
    grey = json.loads((tmp_path / "f_grey" / "results.json").read_text())["summary"]
    assert not grey["stop_confirmed"] and grey["detection_rate"] < 0.1


def test_field_refuses_what_it_cannot_read(tmp_path):
    r = CliRunner().invoke(app, ["field", str(tmp_path / "missing.mp4"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "missing.mp4" in r.output
    (tmp_path / "empty").mkdir()
    r = CliRunner().invoke(app, ["field", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "no images" in r.output
