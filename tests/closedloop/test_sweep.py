"""Sweeps: the same outcomes on 1 worker, 2 worker processes and Ray; a killed sweep resumes with
nothing lost and nothing run twice; the table, summary and report; sweep-file errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import yaml

from patchsim.closedloop.sweep import load_sweep, run_sweep
from patchsim.errors import ConfigError


def _sweep_file(tmp: Path, scenario: Path, patch: Path, grid: dict, seeds: int = 1) -> Path:
    path = tmp / "sweep.yaml"
    path.write_text(yaml.safe_dump({"name": "tiny", "scenario": str(scenario), "patches": [str(patch)],
                                    "seeds": seeds, "seed_start": 11, "grid": grid, "videos": 1}))
    return path


def _outcomes(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text())["outcome"] for p in (out / "episodes").glob("*.json")}


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory, near_stop_scenario, grey_poster):
    tmp = tmp_path_factory.mktemp("sweep")
    sweep = _sweep_file(tmp, near_stop_scenario, grey_poster,
                        {"lighting.preset": ["noon", "dusk"], "signs.0.offset_m": [2.0, 4.5]})
    summary = run_sweep(sweep, tmp / "two", workers=2, progress=False)
    return sweep, tmp, summary


def test_a_sweep_compares_clean_and_patched(two_workers):
    sweep, tmp, summary = two_workers
    out = tmp / "two"
    assert summary["episodes"] == 8 and summary["conditions"] == 4 and summary["episodes_run"] == 8
    clean, grey = summary["variants"]["clean"], summary["variants"]["grey-poster"]
    assert clean["stopped_before_line"]["k"] == 4 and grey["ran_stop_sign"]["k"] == 4
    lo, hi = clean["stopped_before_line"]["ci95"]
    assert 0.4 < lo < 1.0 and hi == 1.0  # Wilson interval of 4/4
    table = pl.read_parquet(out / "episodes.parquet")
    assert table.height == 8 and {"variant", "seed", "cond.lighting.preset", "cond.signs.0.offset_m",
                                  "stopped_before_line", "detection_rate_by_band.20-30"} <= set(table.columns)
    page = (out / "report.html").read_text()
    assert "data:image/png;base64" in page and 'src="http' not in page
    assert (out / "plots" / "heatmap_stopped_before_line.png").is_file()
    assert len(list((out / "videos").glob("*.mp4"))) == 2  # the first episode of each variant


def test_one_worker_and_ray_give_the_same_outcomes(two_workers):
    sweep, tmp, _ = two_workers
    reference = _outcomes(tmp / "two")
    run_sweep(sweep, tmp / "one", workers=1, progress=False, report=False)
    assert _outcomes(tmp / "one") == reference
    run_sweep(sweep, tmp / "ray", workers=2, executor="ray", progress=False, report=False)
    assert _outcomes(tmp / "ray") == reference


def test_a_killed_sweep_resumes_without_losing_or_repeating_episodes(tmp_path, near_stop_scenario, grey_poster):
    sweep = _sweep_file(tmp_path, near_stop_scenario, grey_poster, {"lighting.preset": ["noon", "overcast", "dusk"]})
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "patchsim.cli", "scenario", "sweep", str(sweep), "--out", str(out),
                             "--workers", "1", "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((out / "episodes").glob("*.json"))) >= 2:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    kept = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "episodes").glob("*.json")}
    assert 2 <= len(kept) < 6, "the sweep was not killed halfway"
    summary = run_sweep(sweep, out, workers=1, progress=False, report=False)
    assert summary["episodes"] == 6 and summary["episodes_resumed"] == len(kept)
    assert summary["episodes_run"] == 6 - len(kept)
    now = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in (out / "episodes").glob("*.json")}
    assert len(now) == 6 and all(now[name] == kept[name] for name in kept)  # finished episodes not run again
    assert not list((out / "episodes").glob(".*"))  # no half-written files left


def test_sweep_file_errors_name_the_file_key_and_line(tmp_path, near_stop_scenario, grey_poster):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"scenario: {near_stop_scenario}\nseeds: 2\ngrid:\n  signs.0.offest_m: [1.0, 2.0]\n")
    with pytest.raises(ConfigError) as exc:
        load_sweep(bad)
    assert "bad.yaml:4" in str(exc.value) and "offest_m" in str(exc.value)
    bad.write_text(f"scenario: {near_stop_scenario}\nrandom:\n  camera.height_m: [0.1, 2.0]\nsamples: 3\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:3.*range"):
        load_sweep(bad)
    bad.write_text(f"scenario: {near_stop_scenario}\nrandom:\n  camera.height_m: [1.0, 2.0]\n")
    with pytest.raises(ConfigError, match="samples"):
        load_sweep(bad)
    road_patch = tmp_path / "road"
    from tests.closedloop.conftest import write_patch_run

    import numpy as np

    write_patch_run(road_patch, np.zeros((8, 8, 4), np.uint8), slot="road_patch", kind="road")
    with pytest.raises(ConfigError, match="slot 'road_patch'.*slots: stop_face"):
        run_sweep(_sweep_file(tmp_path, near_stop_scenario, road_patch, {}), tmp_path / "x", progress=False)


def test_a_damaged_episode_file_is_run_again_with_a_line_saying_so(tmp_path, capsys):
    from patchsim.closedloop.executors import finished
    from patchsim.closedloop.jobs import EpisodeJob

    job = EpisodeJob("scenarios/stop_sign_approach.yaml", 0, "planner", "detector:default")
    (tmp_path / f"{job.job_id}.json").write_text('{"job_id": "trunc')
    assert finished(tmp_path, job) is None
    assert f"{job.job_id}.json: damaged" in capsys.readouterr().err
    (tmp_path / f"{job.job_id}.json").write_text(json.dumps({"job_id": job.job_id, "outcome": {}}))
    assert finished(tmp_path, job)["job_id"] == job.job_id
