"""The attack loop: checkpoints and resume after a kill, run directory contents, config errors."""

import json
import subprocess
import sys
import time

import pytest
import torch
import yaml

from patchsim.attack.config import load_attack_config
from patchsim.attack.optimizer import run_attack
from patchsim.config import to_dict
from patchsim.errors import CheckpointError, ConfigError


def _tiny(victim: str = "detector:default"):
    cfg = load_attack_config("stop_sticker_vanish")
    cfg.victim = victim
    cfg.scenes.frames, cfg.scenes.frames_per_seed = 4, 4
    cfg.heldout.frames, cfg.heldout.frames_per_seed = 2, 2
    cfg.eot.crop_px = 128
    cfg.eot.background_pool, cfg.eot.background_reuse = 4, 2.0  # a new pool every 4 steps: resume crosses pools
    cfg.batch, cfg.steps, cfg.eval_every, cfg.checkpoint_every = 2, 10, 5, 2
    cfg.eval_samples, cfg.final_samples, cfg.mask_search_steps = 2, 4, 2
    cfg.time_budget_s, cfg.plateau_evals = None, None
    cfg.closed_loop_seeds, cfg.closed_loop_candidates = 0, 1
    return cfg


def test_resume_after_kill_ends_with_the_same_patch(tmp_path):
    cfg = _tiny()
    whole = run_attack(cfg, tmp_path / "whole", progress=False)
    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(to_dict(cfg)))
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "patchsim.cli", "attack", "--out", str(killed), "--config",
                             str(cfg_file), "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    step = None
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        ck = killed / "checkpoint.pt"
        if ck.is_file():
            step = torch.load(ck, weights_only=True)["state"]["step"]
            if step < cfg.steps:
                proc.kill()
                break
        time.sleep(0.02)
    proc.wait()
    assert step is not None and step < cfg.steps, "the run finished before it could be killed"
    resumed = run_attack(cfg, killed, resume=True, progress=False)
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert torch.equal(a["colours"], b["colours"]) and torch.equal(a["mask"], b["mask"])
    assert (tmp_path / "whole" / "patch.png").read_bytes() == (killed / "patch.png").read_bytes()
    assert whole.metrics["heldout_success_rate"] == resumed.metrics["heldout_success_rate"]


def test_a_checkpoint_of_another_pool_sampling_scheme_is_not_resumed(tmp_path):
    cfg = _tiny()
    cfg.steps = 2
    run_attack(cfg, tmp_path / "run", progress=False)
    ck_path = tmp_path / "run" / "checkpoint.pt"
    ck = torch.load(ck_path, weights_only=True)
    del ck["state"]["pool_sampling"]  # as written before the scheme was recorded
    torch.save(ck, ck_path)
    with pytest.raises(CheckpointError, match="drew its samples another way"):
        run_attack(cfg, tmp_path / "run", resume=True, progress=False)


def test_run_directory_is_self_describing(tmp_path):
    cfg = _tiny()
    cfg.steps = 4
    result = run_attack(cfg, tmp_path / "run", progress=False)
    out = tmp_path / "run"
    doc = json.loads((out / "patch.json").read_text())
    for key in ("heldout_success_rate", "clean_detection_rate", "steps", "wall_s"):
        assert key in doc["metrics"]
    bands = doc["metrics"]["heldout_by_distance_m"]  # the held-out figures by distance, as the closed loop's
    assert sum(b["samples"] for b in bands.values()) == cfg.final_samples
    counted = sum(b["counted"] for b in bands.values())
    assert counted == doc["metrics"]["heldout_samples"]
    won = sum(b["heldout_success_rate"] * b["counted"] for b in bands.values() if b["counted"])
    assert won == pytest.approx(doc["metrics"]["heldout_success_rate"] * counted, abs=1e-3)
    failures = json.loads((out / "failures.json").read_text())["indices"]
    assert len(failures) == counted - round(won)
    assert set(bands) <= {"0-10", "10-20", "20-30", "30-40", "40-60", "60+"}
    assert all(0 <= b["adversarial_detection_rate"] <= 1 for b in bands.values())
    assert doc["slot"]["size_m"] == [0.75, 0.75] and doc["print_dpi"] == 150.0 and doc["seed"] == 0
    assert doc["mask"]["coverage"] <= 0.25
    stickers = doc["mask"]["stickers_m"]  # the stickers as cut, each with its own size
    assert len(doc["mask"]["pieces"]) <= 8 and min(p["short_side_m"] for p in doc["mask"]["pieces"]) >= 0.05
    assert stickers and all(s["w_m"] > 0 and s["h_m"] > 0 for s in stickers)
    face_m2 = result.patch.outline_area_m2
    assert abs(sum(s["w_m"] * s["h_m"] for s in stickers) / face_m2 - doc["mask"]["coverage"]) < 0.01
    for name in ("patch.png", "mask.png", "config.yaml", "run.json", "curves.png", "heldout_params.json",
                 "failures.json"):
        assert (out / name).is_file(), name
    assert any((out / "tb").iterdir())
    assert result.patch.coverage() <= 0.25
    # the scene banks live in the shared cache, keyed by what made them; the run directory stays small
    run_json = json.loads((out / "run.json").read_text())
    from patchsim.cache import entry_path

    assert entry_path("scenes", run_json["scene_bank_cache_key"]).is_file()
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 20e6
    with pytest.raises(CheckpointError, match="already holds a run"):
        run_attack(cfg, out, progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        run_attack(cfg, tmp_path / "empty", resume=True, progress=False)


def test_a_scene_bank_is_reused_only_for_the_same_configuration(tmp_path):
    from patchsim.attack.banks import bank_key

    cfg = _tiny()
    key = bank_key(cfg)
    assert bank_key(_tiny()) == key
    cfg.heldout.frames = 3
    assert bank_key(cfg) != key  # another held-out bank: built anew, never the stale one
    cfg = _tiny()
    cfg.steps = 99
    assert bank_key(cfg) == key  # optimizer settings do not change the banks


def test_bad_attack_configs_fail_clearly(tmp_path):
    bad = tmp_path / "bad.yaml"
    cases = [  # (file text, the error it must give)
        ("name: x\nsteps: 10\npatch:\n  mask: stickers\n  sticker_count: 3\n",
         r"bad.yaml:5: key 'patch.sticker_count': unknown key"),
        ("goal: misclassify\n", "needs target_class"),
        ("eot:\n  crop_px: -3\n", r"bad.yaml:2: key 'eot.crop_px': -3 is out of range"),
        ("batch: 12\neot:\n  drive_frames: 5\n",
         r"bad.yaml:3: key 'eot.drive_frames': a batch of 12 samples does not split"),
        ("batch: 12\nscenes:\n  frames_per_seed: 2\neot:\n  drive_frames: 4\n",
         r"key 'eot.drive_frames': drives of 4 frames need scenes.frames_per_seed"),
        ("goal: appear\ntarget_class: speed_limit\nscenes:\n  frames_per_seed: 4\neot:\n  drive_frames: 4\n",
         r"goal 'appear' has no drive-level loss"),
        ("goal: steer\nvictim: lanekeeper:pilotnet\nclass_competition: true\n",
         r"bad.yaml:3: key 'class_competition': goal 'steer' hides no class"),
    ]
    for text, error in cases:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=error):
            load_attack_config(bad)
    cfg = _tiny()
    cfg.goal = "steer"
    with pytest.raises(ValueError, match="needs a lane-keeper"):
        run_attack(cfg, tmp_path / "r", progress=False)


def test_selection_breaks_ties_by_steering_change():
    import numpy as np

    from patchsim.attack.goals import SteerResult

    clean = np.zeros(4)
    weak = SteerResult(np.ones(4, bool), clean_steer_deg=clean, adv_steer_deg=np.full(4, 3.0))
    strong = SteerResult(np.ones(4, bool), clean_steer_deg=clean, adv_steer_deg=np.full(4, 5.0))
    assert strong.selection_score > weak.selection_score
    right = SteerResult(np.ones(4, bool), clean_steer_deg=clean, adv_steer_deg=np.full(4, -5.0),
                          steer_sign=-1.0)
    assert right.selection_score == (1.0, 5.0)
    more_hits = SteerResult(np.array([1, 1, 1, 1, 1], bool), clean_steer_deg=np.zeros(5),
                              adv_steer_deg=np.full(5, 2.0))
    fewer = SteerResult(np.array([1, 1, 1, 1, 0], bool), clean_steer_deg=np.zeros(5),
                          adv_steer_deg=np.full(5, 9.0))
    assert more_hits.selection_score > fewer.selection_score  # the success rate comes first


def test_steering_attack_keeps_the_patch_that_steers_most(tmp_path):
    cfg = load_attack_config("road_steer_pilotnet")
    cfg.scenes.frames, cfg.scenes.frames_per_seed = 4, 4
    cfg.heldout.frames, cfg.heldout.frames_per_seed = 4, 4
    cfg.batch, cfg.steps, cfg.eval_every, cfg.checkpoint_every = 2, 6, 2, 2
    cfg.eval_samples, cfg.final_samples = 4, 4
    cfg.time_budget_s = None
    result = run_attack(cfg, tmp_path / "road", progress=False)
    evals = torch.load(tmp_path / "road" / "checkpoint.pt", weights_only=True)["state"]["evals"]
    assert all("steer_change_to_side_deg" in e for e in evals)
    kept = next(e for e in evals if e["step"] == result.metrics["best_step"])
    for e in evals:  # no evaluation beat the kept one (the logged changes are rounded to 0.001 deg)
        assert (e["heldout_success_rate"], e["steer_change_to_side_deg"]) <= (
            kept["heldout_success_rate"], kept["steer_change_to_side_deg"] + 0.001)
    assert "mean_steer_change_deg" in result.metrics


def test_unknown_class_and_damaged_checkpoint_fail_before_anything_is_written(tmp_path):
    cfg = _tiny()
    cfg.source_class = "giraffe"
    with pytest.raises(ConfigError, match="key 'source_class'.*giraffe.*it has: stop_sign"):
        run_attack(cfg, tmp_path / "giraffe", progress=False)
    assert not (tmp_path / "giraffe").exists()

    cfg = _tiny()
    cfg.steps = 2
    run = tmp_path / "run"
    run_attack(cfg, run, progress=False)
    data = (run / "checkpoint.pt").read_bytes()
    (run / "checkpoint.pt").write_bytes(data[: len(data) // 2])
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match=r"checkpoint.pt: not a readable patchsim checkpoint"):
        run_attack(cfg, run, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before

    (run / "checkpoint.pt").write_bytes(data)
    cfg.lr = 0.05
    with pytest.raises(CheckpointError, match="differs from the config given in lr"):
        run_attack(cfg, run, resume=True, progress=False)
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != "checkpoint.pt"} == \
        {k: v for k, v in before.items() if k != "checkpoint.pt"}


def test_a_plateau_of_the_heldout_score_stops_the_run(tmp_path):
    cfg = _tiny()
    cfg.steps, cfg.eval_every, cfg.plateau_evals = 40, 2, 2
    result = run_attack(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]
    assert result.metrics["stopped_by"] == "plateau"
    assert result.metrics["steps"] == state["best_step"] + 2 * 2 < 40  # two evaluations without a better patch


def test_a_run_killed_after_its_time_budget_ran_out_finishes_on_resume(tmp_path):
    """Killed between the loop's end and its outputs: the same config resumes and only finishes."""
    cfg = _tiny()
    cfg.steps, cfg.time_budget_s = 10_000, 1.0
    run = tmp_path / "run"
    first = run_attack(cfg, run, progress=False)
    assert first.metrics["stopped_by"] == "time_budget" and first.metrics["steps"] < 10_000
    (run / "patch.json").unlink()  # as if killed during the final evaluation
    again = run_attack(cfg, run, resume=True, progress=False)
    assert again.metrics["steps"] == first.metrics["steps"] and again.metrics["stopped_by"] == "time_budget"
    assert again.metrics["heldout_success_rate"] == first.metrics["heldout_success_rate"]
    cfg.steps = 20_000  # going on needs a new budget
    with pytest.raises(CheckpointError, match="used its time budget"):
        run_attack(cfg, run, resume=True, progress=False)


def test_a_finished_run_is_extended_with_more_steps(tmp_path):
    cfg = _tiny()
    cfg.steps = 4
    run = tmp_path / "run"
    first = run_attack(cfg, run, progress=False)
    assert first.metrics["steps"] == 4
    cfg.steps = 2
    with pytest.raises(CheckpointError, match="has made 4 steps; --steps 2 is fewer"):
        run_attack(cfg, run, resume=True, progress=False)
    cfg.steps = 8
    saved = yaml.safe_load((run / "config.yaml").read_text())
    del saved["closed_loop_candidates"]  # a run made before the key existed resumes with its default
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    more = run_attack(cfg, run, resume=True, progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=True)["state"]
    assert more.metrics["steps"] == 8 and len(state["history"]) == 8
    assert state["extensions"] == [{"at_step": 4, "steps": 8}]
    assert yaml.safe_load((run / "config.yaml").read_text())["steps"] == 8


def test_an_extension_killed_halfway_goes_on_to_its_new_steps_when_resumed(tmp_path, monkeypatch):
    import patchsim.attack.optimizer as optimizer

    cfg = _tiny()
    cfg.steps = 4
    run = tmp_path / "run"
    run_attack(cfg, run, progress=False)
    cfg.steps = 8
    write = optimizer.write_checkpoint

    def killed_after_step_6(path, state_dict):
        write(path, state_dict)
        if state_dict["state"]["step"] == 6:
            raise KeyboardInterrupt

    monkeypatch.setattr(optimizer, "write_checkpoint", killed_after_step_6)
    with pytest.raises(KeyboardInterrupt):
        run_attack(cfg, run, resume=True, progress=False)
    monkeypatch.setattr(optimizer, "write_checkpoint", write)
    resumed = run_attack(cfg, run, resume=True, progress=False)  # the config now says 8 steps: no extension
    assert resumed.metrics["steps"] == 8 and resumed.metrics["stopped_by"] == "steps"


def test_eot_settings_are_checked_with_file_key_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\neot:\n  lighting:\n    brightness: [1.3, 0.7]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4: key 'eot.lighting.brightness': \[1.3, 0.7\]: low is above high"):
        load_attack_config(bad)
    bad.write_text("name: x\neot:\n  blur:\n    motion_p: 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:4: key 'eot.blur.motion_p': 2.0 is out of range"):
        load_attack_config(bad)


def test_select_by_margin_keeps_the_patch_furthest_past_the_goal(tmp_path):
    cfg = _tiny()
    cfg.steps, cfg.eval_every, cfg.select_by_margin = 6, 2, True
    run_attack(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]
    evals = state["evals"]
    assert all("score_margin" in e for e in evals)
    best = max(evals, key=lambda e: (e["heldout_success_rate"], e["score_margin"]))
    assert state["best_step"] == best["step"]


def test_the_loop_runs_step_by_step_without_a_run_directory_and_ends_where_run_attack_does(tmp_path):
    """A training loop (hardening) drives AttackLoop itself: same patch as the run, no files written."""
    from patchsim.attack.banks import scene_banks
    from patchsim.attack.evaluate import HeldoutSamples
    from patchsim.attack.loop import AttackLoop
    from patchsim.attack.objective import Objective, load_attack_victim
    from patchsim.attack.patch import Patch, SlotInfo
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile

    cfg = _tiny()
    cfg.patch.mask, cfg.patch.max_coverage = "full", 1.0
    cfg.steps = 9  # not a multiple of eval_every: the last step is scored too
    run_attack(cfg, tmp_path / "run", progress=False)
    ran = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["state"]

    victim = load_attack_victim(cfg)
    bank, heldout_bank, _ = scene_banks(cfg)
    profile = load_profile(cfg.printer_profile)
    eot = EOT(cfg.eot, profile)
    patch = Patch(SlotInfo(cfg.scenes.slot, bank.slot_kind, bank.slot_size_m, bank.sign_kind), cfg.patch,
                  generator=torch.Generator().manual_seed(cfg.seed))
    objective = Objective(cfg, victim, eot, torch.as_tensor(profile.palette, dtype=torch.float32))
    heldout = HeldoutSamples(eot, heldout_bank, cfg.eval_samples, cfg.final_samples, cfg.seed)
    loop = AttackLoop(cfg, objective, patch, bank, heldout)
    losses = []
    while loop.stop_reason() is None:
        losses.append(loop.step()["attack"])
        if loop.eval_due():
            loop.evaluate()
    assert len(losses) == cfg.steps and [e["step"] for e in loop.state["evals"]] == [5, 9]
    assert [h["attack"] for h in ran["history"]] == [round(v, 5) for v in losses]
    assert loop.state["best_step"] == ran["best_step"]
    assert torch.equal(loop.best_image(), ran["best_colours"])
    assert list(tmp_path.iterdir()) == [tmp_path / "run"]
