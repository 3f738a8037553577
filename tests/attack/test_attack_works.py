"""A small attack does what it is for: held-out detection falls far below the clean rate; and (slow)
in closed loop the car runs the stop sign it stops for without the patch."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from patchsim.attack.config import load_attack_config
from patchsim.attack.optimizer import run_attack
from patchsim.closedloop.jobs import EpisodeJob, EpisodeWorker


def _small_poster(scenario, steps: int):
    cfg = load_attack_config("stop_poster_vanish")
    for bank in (cfg.scenes, cfg.heldout):
        bank.scenario = str(scenario)
        bank.distance_m = (6.0, 32.0)  # the whole encounter of the short scenario
        bank.distance_sampling = "log"
        bank.frames, bank.frames_per_seed = 16, 4
    cfg.eot.crop_px = 160
    cfg.eot.background_pool, cfg.eot.background_reuse = 12, 4.0
    cfg.batch, cfg.steps, cfg.eval_every, cfg.checkpoint_every = 8, steps, 20, 20
    cfg.eval_samples, cfg.final_samples = 16, 48
    cfg.time_budget_s = None
    cfg.closed_loop_seeds = 0  # the per-frame figures only; the closed-loop tests ask for drives themselves
    return cfg


@pytest.mark.parametrize("drive_frames", [1, 4], ids=["per-frame", "drive-level"])
def test_a_small_poster_attack_lowers_held_out_detection(tmp_path, near_stop_scenario, drive_frames):
    cfg = _small_poster(near_stop_scenario, 40)
    cfg.eot.drive_frames = drive_frames  # 4: two drives of 4 frames per batch, the loss on each drive
    m = run_attack(cfg, tmp_path / "poster", progress=False).metrics
    assert m["clean_detection_rate"] >= 0.9
    assert m["adversarial_detection_rate"] <= 0.5 * m["clean_detection_rate"], m


def test_the_patch_kept_is_the_candidate_that_fails_the_car_most(tmp_path, near_stop_scenario):
    cfg = _small_poster(near_stop_scenario, 20)
    cfg.eval_every, cfg.checkpoint_every = 5, 5
    cfg.eval_samples, cfg.final_samples = 8, 8
    cfg.closed_loop_seeds, cfg.closed_loop_candidates = 2, 2
    m = run_attack(cfg, tmp_path / "poster", progress=False).metrics
    rows = m["closed_loop_selection"]["candidates"]
    assert len(rows) == 2 and len({r["step"] for r in rows}) == 2
    best = max(rows, key=lambda r: (r["drove_as_wanted"], r["heldout_success_rate"], r["tiebreak"]))
    assert m["best_step"] == m["closed_loop_selection"]["chosen_step"] == best["step"]
    assert len(list((tmp_path / "poster" / "candidates").glob("step*/patch_rgba.png"))) == 2
    assert m["closed_loop"]["seeds"] == 2 and "stopped_before_line" in m["closed_loop"]["patched"]


def test_closed_loop_candidates_come_from_different_stages_of_the_run():
    from patchsim.attack.loop import keep_candidates

    kept: list = []
    for step, score in ((25, 0.5), (50, 0.9), (75, 0.95), (100, 0.9), (150, 0.8), (175, 0.85), (250, 0.6)):
        kept = keep_candidates(kept, {"step": step, "score": score, "tie": 0.0}, 3, 60)
    # 75 displaced 50 (nearer than 60 steps); 100 lost to 75; 175 displaced 150; 250 is third
    assert [c["step"] for c in kept] == [75, 175, 250]


@pytest.mark.slow
def test_an_optimized_poster_makes_the_car_run_the_stop_sign(tmp_path, near_stop_scenario):
    run_attack(_small_poster(near_stop_scenario, 300), tmp_path / "poster", progress=False)
    worker = EpisodeWorker()
    ran = 0
    for seed in range(4):
        clean = worker.run(EpisodeJob(str(near_stop_scenario), seed, "planner", "detector:default"))
        patched = worker.run(EpisodeJob(str(near_stop_scenario), seed, "planner", "detector:default",
                                        patch=str(tmp_path / "poster"), variant="poster"))
        assert clean["outcome"]["stopped_before_line"], yaml.safe_dump(clean["outcome"])
        ran += patched["outcome"]["ran_stop_sign"]
    worker.close()
    assert ran >= 3


def _small_marking(steps: int):
    # the marking over the centre line: it takes drives out within a dozen steps from grey; the shipped
    # marking over the ego lane needs a couple of dozen, too many for the suite
    cfg = load_attack_config(Path(__file__).parents[2] / "docs" / "experiments" / "road_depart_centre_line.yaml")
    for bank in (cfg.scenes, cfg.heldout):
        bank.frames, bank.frames_per_seed = 12, 4
    cfg.batch, cfg.steps, cfg.eval_every, cfg.checkpoint_every = 8, steps, 6, 6
    cfg.eval_samples, cfg.final_samples = 8, 16
    cfg.time_budget_s = None
    return cfg


def test_a_small_road_marking_takes_rolled_out_drives_out_of_their_lane(tmp_path):
    m = run_attack(_small_marking(12), tmp_path / "marking", progress=False).metrics
    assert m["clean_departure_rate"] <= 0.25, m
    assert m["adversarial_departure_rate"] >= m["clean_departure_rate"] + 0.25, m
    assert m["adversarial_mean_side_offset_m"] > m["clean_mean_side_offset_m"] + 0.3, m


@pytest.mark.slow
def test_an_optimized_road_marking_takes_the_car_out_of_its_lane(tmp_path):
    run_attack(_small_marking(60), tmp_path / "marking", progress=False)
    worker = EpisodeWorker()
    departed = 0
    for seed in range(4):
        clean = worker.run(EpisodeJob("scenarios/lane_keep_straight.yaml", seed, "lanekeeper", "lanekeeper:pilotnet"))
        patched = worker.run(EpisodeJob("scenarios/lane_keep_straight.yaml", seed, "lanekeeper", "lanekeeper:pilotnet",
                                        patch=str(tmp_path / "marking"), variant="marking"))
        assert not clean["outcome"]["lane_departure"], yaml.safe_dump(clean["outcome"])
        departed += patched["outcome"]["lane_departure"]
    worker.close()
    assert departed >= 3
