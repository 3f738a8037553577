import json

from typer.testing import CliRunner

from patchsim.cli import app


def test_sim_render_writes_frames_video_and_ground_truth(tmp_path):
    out = tmp_path / "render"
    result = CliRunner().invoke(app, ["sim", "render", "scenarios/stop_sign_approach.yaml", "--out", str(out),
                                      "--steps", "6", "--seed", "1"])
    assert result.exit_code == 0, result.output
    frames = sorted((out / "frames").glob("*.png"))
    assert len(frames) == 6
    lines = (out / "ground_truth.jsonl").read_text().strip().splitlines()
    assert len(lines) == 6
    gt = json.loads(lines[0])
    assert gt["signs"][0]["kind"] == "stop_sign" and len(gt["signs"][0]["face_corners_px"]) == 4
    assert "lateral_offset_m" in gt["lane"] and "ego" in gt
    assert (out / "video.mp4").stat().st_size > 1000
    assert json.loads((out / "run.json").read_text())["seed"] == 1


def test_sim_render_reports_a_bad_scenario(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nroad:\n  lanes: 9\n")
    result = CliRunner().invoke(app, ["sim", "render", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "bad.yaml:3: key 'road.lanes': 9 is out of range" in result.output
    result = CliRunner().invoke(app, ["sim", "render", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "file not found" in result.output
