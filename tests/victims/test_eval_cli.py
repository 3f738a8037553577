import json

from typer.testing import CliRunner

from patchsim.cli import app
from patchsim.data.generate import DetectorDataConfig, generate_detector_dataset


def test_victims_eval_prints_the_metrics_as_json(tmp_path):
    generate_detector_dataset(DetectorDataConfig(seed=77, train_scenes=0, val_scenes=0, test_scenes=2,
                                                 frames_per_scene=4), tmp_path, progress=False)
    result = CliRunner().invoke(app, ["victims", "eval", "--json", "--seeds", "1", "--data",
                                      str(tmp_path / "data.yaml")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output.strip().splitlines()[-1])
    det = out["detector"]
    assert 0.0 <= det["map50"] <= 1.0 and det["test_images"] == 8
    assert det["stop_sign_recall_5_30m"] is not None and 0.0 <= det["stop_sign_recall_5_30m"] <= 1.0
    for name in ("pilotnet", "lanenet"):
        lk = out["lanekeepers"][name]
        assert lk["runs"] == 2 and lk["mean_abs_offset_m"] >= 0 and isinstance(lk["departures"], int)
