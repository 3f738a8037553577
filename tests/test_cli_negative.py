"""Bad input, one at a time, the way a user meets it: the real ``patchsim`` command in a process of its
own, real files. Every case must exit 2 with a one-line message that names the culprit (file, key, flag
or value), print no traceback, and leave nothing behind in the output location.

Each case's process is forked from a server that has imported torch and the CLI once (multiprocessing's
forkserver), so the 95 cases do not each pay for a fresh Python importing torch; the process then runs
``patchsim.cli.main`` with its own arguments, environment, working directory and output files."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.closedloop.conftest import write_patch_run
from tests.printing.conftest import write_run

ROOT = Path(__file__).resolve().parent.parent
STOP = "scenarios/stop_sign_approach.yaml"

# (case id, arguments after `patchsim` with {t} for the case folder, text the message must contain).
# Outputs go to {t}/out (or a file inside it); {t}/blocker is a file, so {t}/blocker/x cannot be written.
CASES = [
    # sim render
    ("render-missing-scenario", "sim render {t}/none.yaml --out {t}/out", "none.yaml"),
    ("render-empty-scenario", "sim render {t}/empty.yaml --out {t}/out", "empty.yaml: the file is empty"),
    ("render-malformed-scenario", "sim render {t}/malformed.yaml --out {t}/out", "malformed.yaml:3"),
    ("render-wrong-type", "sim render {t}/bad_scenario.yaml --out {t}/out", "ego.speed_mps"),
    ("render-steps-out-of-range", f"sim render {STOP} --out {{t}}/out --steps 0", "--steps"),
    ("render-patch-without-slot", f"sim render {STOP} --out {{t}}/out --patch {{t}}/grey.png", "--slot"),
    ("render-unknown-slot", f"sim render {STOP} --out {{t}}/out --patch {{t}}/grey.png --slot nope --steps 2",
     "'nope'"),
    ("render-missing-patch", f"sim render {STOP} --out {{t}}/out --patch {{t}}/none.png --slot stop_face",
     "none.png"),
    ("render-unwritable-out", f"sim render {STOP} --out {{t}}/blocker/out --steps 2", "blocker"),
    ("render-bad-sim", f"sim render {STOP} --out {{t}}/out --sim unity", "--sim"),
    # data generate
    ("data-bad-task", "data generate --out {t}/out --task nope", "--task"),
    ("data-scenes-out-of-range", "data generate --out {t}/out --scenes -1", "key 'train_scenes': -1 is out of range"),
    ("data-empty-config", "data generate --out {t}/out --config {t}/empty.yaml", "empty.yaml"),
    ("data-unknown-key", "data generate --out {t}/out --config {t}/unknown_key.yaml", "colour_of_sky"),
    ("data-unwritable-out", "data generate --out {t}/blocker/out --scenes 1", "blocker"),
    # victims
    ("train-detector-missing-data", "victims train-detector --out {t}/out --data {t}/none.yaml", "none.yaml"),
    ("train-detector-epochs", "victims train-detector --out {t}/out --epochs 0", "epochs"),
    ("train-detector-device", "victims train-detector --out {t}/out --device banana", "banana"),
    ("train-lanekeeper-malformed", "victims train-lanekeeper --out {t}/out --config {t}/malformed.yaml",
     "malformed.yaml"),
    ("train-lanekeeper-unwritable", "victims train-lanekeeper --out {t}/blocker/out", "blocker"),
    ("eval-unknown-detector", "victims eval --detector detector:nope --skip-lanekeepers", "detector:nope"),
    ("eval-unknown-lanekeeper", "victims eval --lanekeeper lanekeeper:nope --skip-detector", "lanekeeper:nope"),
    ("eval-seeds", "victims eval --seeds 0", "--seeds"),
    ("eval-device", "victims eval --device banana --skip-lanekeepers", "banana"),
    # attack
    ("attack-unknown-config", "attack --out {t}/out --config nope", "nope"),
    ("attack-empty-config", "attack --out {t}/out --config {t}/empty.yaml", "empty.yaml"),
    ("attack-malformed-config", "attack --out {t}/out --config {t}/malformed.yaml", "malformed.yaml:3"),
    ("attack-wrong-type", "attack --out {t}/out --config {t}/wrong_type.yaml", "'steps'"),
    ("attack-out-of-range", "attack --out {t}/out --steps -3", "'steps'"),
    ("attack-batch-zero", "attack --out {t}/out --batch 0", "'batch'"),
    ("attack-bad-device", "attack --out {t}/out --device banana", "banana"),
    ("attack-unknown-class", "attack --out {t}/out --config {t}/giraffe.yaml", "giraffe"),
    ("attack-wrong-task", "attack --out {t}/out --config {t}/wrong_task.yaml", "lanekeeper:pilotnet"),
    ("attack-unknown-victim", "attack --out {t}/out --config {t}/unknown_victim.yaml", "detector:nope"),
    ("attack-resume-nothing", "attack --out {t}/out --resume", "checkpoint"),
    ("attack-resume-truncated", "attack --out {t}/interrupted --resume", "checkpoint.pt"),
    ("attack-unwritable-out", "attack --out {t}/blocker/out --steps 1", "blocker"),
    # validate
    ("validate-missing-run", "validate {t}/none --out {t}/out", "none"),
    ("validate-empty-run", "validate {t}/emptydir --out {t}/out", "patch.json"),
    ("validate-empty-scenario", "validate {t}/grey --scenario {t}/empty.yaml --out {t}/out", "empty.yaml"),
    ("validate-scenario-without-slot", "validate {t}/grey --scenario scenarios/lane_keep_straight.yaml --out {t}/out",
     "stop_face"),
    # field
    ("field-missing-source", "field {t}/none.mp4 --out {t}/out", "none.mp4"),
    ("field-not-a-video", "field {t}/notvideo.mp4 --out {t}/out", "notvideo.mp4"),
    ("field-empty-folder", "field {t}/emptydir --out {t}/out", "emptydir"),
    ("field-bad-confirm", "field {t}/emptydir --out {t}/out --confirm 5/3", "confirm"),
    ("field-unknown-class", "field {t}/frames --out {t}/out --sign-class giraffe", "giraffe"),
    ("field-unknown-victim", "field {t}/frames --out {t}/out --victim detector:nope", "detector:nope"),
    ("field-unwritable-out", "field {t}/frames --out {t}/blocker/out", "blocker"),
    # pipeline
    ("pipeline-unknown-config", "pipeline --out {t}/out --config nope --printables {t}/out/p", "nope"),
    ("pipeline-unknown-paper", "pipeline --out {t}/out --paper B9 --printables {t}/out/p", "B9"),
    ("pipeline-missing-sweep", "pipeline --out {t}/out --sweep {t}/none.yaml --printables {t}/out/p", "none.yaml"),
    ("pipeline-seeds", "pipeline --out {t}/out --heldout-seeds 0", "--heldout-seeds"),
    ("pipeline-unwritable-out", "pipeline --out {t}/blocker/out --printables {t}/out/p", "blocker"),
    # print
    ("print-missing-run", "print {t}/none --out {t}/out/p.pdf", "none"),
    ("print-unknown-paper", "print {t}/printrun --out {t}/out/p.pdf --paper B9", "B9"),
    ("print-malformed-size", "print {t}/printrun --out {t}/out/p.pdf --paper custom --custom-size-mm abc", "abc"),
    ("print-100m-paper", "print {t}/printrun --out {t}/out/p.pdf --paper custom --custom-size-mm 100000x100000",
     "100000"),
    ("print-negative-margin", "print {t}/printrun --out {t}/out/p.pdf --margin-mm -5", "margin"),
    ("print-unwritable-out", "print {t}/printrun --out {t}/blocker/p.pdf", "blocker"),
    # chart, calibrate
    ("chart-no-patches", "chart --out {t}/out/c.pdf --patches 0", "patches"),
    ("chart-unknown-paper", "chart --out {t}/out/c.pdf --paper B9", "B9"),
    ("chart-unwritable-out", "chart --out {t}/blocker/c.pdf", "blocker"),
    ("calibrate-missing-photo", "calibrate {t}/none.jpg --name mine --profiles-dir {t}/out", "none.jpg"),
    ("calibrate-not-an-image", "calibrate {t}/notvideo.mp4 --name mine --profiles-dir {t}/out", "notvideo.mp4"),
    ("calibrate-no-chart", "calibrate {t}/grey.png --name mine --profiles-dir {t}/out", "corner markers"),
    ("calibrate-missing-layout", "calibrate {t}/grey.png --name mine --chart {t}/none.json --profiles-dir {t}/out",
     "none.json"),
    ("calibrate-bad-name", "calibrate {t}/grey.png --name ../../x --profiles-dir {t}/out", "profile name '../../x'"),
    # cache
    ("cache-unknown-kind", "cache --kind nope", "nope"),
    # harden
    ("harden-missing-data", "harden detector --out {t}/out --data {t}/none.yaml", "none.yaml"),
    ("harden-unknown-key", "harden detector --out {t}/out --config {t}/unknown_key.yaml", "colour_of_sky"),
    ("harden-rounds", "harden detector --out {t}/out --rounds 0", "rounds"),
    ("harden-device", "harden detector --out {t}/out --device banana", "banana"),
    ("harden-unknown-baseline", "harden detector --out {t}/out --baseline detector:nope", "detector:nope"),
    ("harden-unknown-attack", "harden detector --out {t}/out --config {t}/harden_bad_attack.yaml", "nope"),
    ("harden-lanekeeper-model", "harden lanekeeper --out {t}/out --model resnet", "resnet"),
    ("harden-lanekeeper-detector-attack", "harden lanekeeper --out {t}/out --config {t}/harden_sticker.yaml",
     "not a lane-keeper attack"),
    ("harden-eval-no-model", "harden eval --out {t}/out", "--model"),
    ("harden-eval-unknown-model", "harden eval --out {t}/out --model {t}/none.pt", "none.pt"),
    ("harden-eval-mixed-kinds", "harden eval --out {t}/out --model lanekeeper:pilotnet", "baseline"),
    # scenario run, sweep
    ("run-missing-scenario", "scenario run {t}/none.yaml --out {t}/out", "none.yaml"),
    ("run-empty-scenario", "scenario run {t}/empty.yaml --out {t}/out", "empty.yaml"),
    ("run-wrong-type", "scenario run {t}/bad_scenario.yaml --out {t}/out", "ego.speed_mps"),
    ("run-missing-patch", f"scenario run {STOP} --out {{t}}/out --patch {{t}}/none", "none"),
    ("run-patch-without-slot", "scenario run scenarios/lane_keep_straight.yaml --out {t}/out --patch {t}/grey",
     "stop_face"),
    ("run-bad-confirm", f"scenario run {STOP} --out {{t}}/out --confirm two", "--confirm"),
    ("run-bad-executor", f"scenario run {STOP} --out {{t}}/out --executor slurm", "slurm"),
    ("run-bad-driver", f"scenario run {STOP} --out {{t}}/out --driver human", "human"),
    ("run-unknown-detector", f"scenario run {STOP} --out {{t}}/out --detector detector:nope", "detector:nope"),
    ("run-unwritable-out", f"scenario run {STOP} --out {{t}}/blocker/out --seeds 1", "blocker"),
    ("sweep-missing", "scenario sweep {t}/none.yaml --out {t}/out", "none.yaml"),
    ("sweep-empty", "scenario sweep {t}/empty.yaml --out {t}/out", "empty.yaml"),
    ("sweep-unknown-key", "scenario sweep {t}/bad_sweep.yaml --out {t}/out", "bad_sweep.yaml:3"),
    ("sweep-bad-executor", "scenario sweep scenarios/sweeps/stop_sign_heldout.yaml --out {t}/out --executor slurm",
     "slurm"),
    ("sweep-unknown-lanekeeper", "scenario sweep scenarios/sweeps/lane_keep_straight_heldout.yaml --out {t}/out "
                                 "--lanekeeper lanekeeper:nope", "lanekeeper:nope"),
    ("sweep-unwritable-out", "scenario sweep scenarios/sweeps/stop_sign_heldout.yaml --out {t}/blocker/out",
     "blocker"),
]


def _inputs(t: Path) -> None:
    """The bad (and the good) files the cases point at, in the case folder ``t``."""
    (t / "empty.yaml").write_text("# nothing but a comment\n")
    (t / "malformed.yaml").write_text("steps: 10\nbatch: [1, 2\n")
    (t / "wrong_type.yaml").write_text("steps: many\n")
    (t / "unknown_key.yaml").write_text("colour_of_sky: green\n")
    (t / "giraffe.yaml").write_text("source_class: giraffe\n")
    (t / "wrong_task.yaml").write_text("victim: lanekeeper:pilotnet\ngoal: vanish\n")
    (t / "unknown_victim.yaml").write_text("victim: detector:nope\n")
    scenario = yaml.safe_load((ROOT / STOP).read_text())
    scenario["ego"]["speed_mps"] = "fast"
    (t / "bad_scenario.yaml").write_text(yaml.safe_dump(scenario, sort_keys=False))
    (t / "bad_sweep.yaml").write_text(f"scenario: {ROOT / STOP}\nseeds: 1\ngird:\n  ego.speed_mps: [8.0]\n")
    (t / "harden_bad_attack.yaml").write_text("attacks:\n  - config: nope\n")
    (t / "harden_sticker.yaml").write_text("attacks:\n  - config: stop_sticker_vanish\n")
    (t / "notvideo.mp4").write_text("this is not a video\n")
    (t / "blocker").write_text("a file where a folder is expected\n")
    (t / "emptydir").mkdir()
    grey = np.full((64, 64, 3), 128, np.uint8)
    import cv2

    cv2.imwrite(str(t / "grey.png"), grey)
    (t / "frames").mkdir()
    cv2.imwrite(str(t / "frames" / "000000.png"), np.full((96, 128, 3), 90, np.uint8))
    rgba = np.full((64, 64, 4), 128, np.uint8)
    rgba[..., 3] = 255
    write_patch_run(t / "grey", rgba)
    write_run(t / "printrun", (0.75, 0.75), 40.0)
    # an attack killed while writing its checkpoint
    (t / "interrupted").mkdir()
    (t / "interrupted" / "config.yaml").write_text(
        (ROOT / "patchsim" / "defaults" / "stop_sticker_vanish.yaml").read_text())
    (t / "interrupted" / "checkpoint.pt").write_bytes(b"PK\x03\x04 truncated")


def _listing(t: Path) -> set[str]:
    return {str(p.relative_to(t)) for p in t.rglob("*")}


def _patchsim_main(words: list[str], env: dict[str, str], stdout: str, stderr: str) -> None:
    """The body of a case's process: ``patchsim WORDS`` as the console command runs it."""
    os.environ.clear()
    os.environ.update(env)
    os.chdir(ROOT)
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)  # C-level writes too
        os.close(target)
    sys.argv = ["patchsim", *words]
    from patchsim.cli import main

    main()


def _run_case(case, base: Path, ctx):
    name, args, _ = case
    t = base / name
    t.mkdir()
    _inputs(t)
    out, err = base / f"{name}.stdout", base / f"{name}.stderr"
    before = _listing(t)
    env = {**os.environ, "PATCHSIM_CACHE": str(t / "cache"), "NO_COLOR": "1", "COLUMNS": "200"}
    words = args.format(t=t).split()
    quiet = ["--no-progress"] if words[0] in ("attack", "scenario", "pipeline") else []
    proc = ctx.Process(target=_patchsim_main, args=([*words, *quiet], env, str(out), str(err)))
    proc.start()
    proc.join(120)
    code = proc.exitcode
    timed_out = proc.is_alive()
    if timed_out:  # a bad input that was not refused: it started working
        proc.kill()
        proc.join()
        code = None
    text = [f.read_text(errors="replace") if f.is_file() else "" for f in (out, err)]
    result = subprocess.CompletedProcess(words, code, text[0],
                                         text[1] + ("still running after 120 s" if timed_out else ""))
    left = _listing(t) - before
    return result, sorted(left)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    """Every case run once, two at a time."""
    base = tmp_path_factory.mktemp("negative")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "patchsim.cli"])
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda c: _run_case(c, base, ctx), CASES))
    return {case[0]: result for case, result in zip(CASES, results)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_a_clear_error_that_leaves_nothing(case, outcomes):
    name, args, culprit = case
    proc, left = outcomes[name]
    text = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}\n{text[-3000:]}"
    assert "Traceback" not in text, text[-3000:]
    assert culprit in text, text[-3000:]
    assert not left, f"left behind: {left}"
