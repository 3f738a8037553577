"""The ``patchsim`` command. Each command parses its options, calls one library function and
prints a short summary; the work and the results live in the library and the run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from patchsim.attack.shipped import shipped_configs
from patchsim.errors import PatchsimError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Physical-world adversarial patches for driving perception: generate, validate, harden.\n\n"
                       "For testing perception systems you own, in simulation and on closed courses only.")
sim_app = typer.Typer(no_args_is_help=True, help="The driving simulator.")
data_app = typer.Typer(no_args_is_help=True, help="Labelled data from the simulator.")
victims_app = typer.Typer(no_args_is_help=True, help="Victim perception models: train and evaluate.")
app.add_typer(sim_app, name="sim")
app.add_typer(data_app, name="data")
scenario_app = typer.Typer(no_args_is_help=True, help="Closed-loop scenario tests: runs and sweeps.")
app.add_typer(victims_app, name="victims")
app.add_typer(scenario_app, name="scenario")
harden_app = typer.Typer(no_args_is_help=True, help="Hardening: adversarial training against patches, judged by "
                                                    "fresh attacks in closed loop.")
app.add_typer(harden_app, name="harden")

SimOpt = Annotated[str, typer.Option("--sim", help="simulator: embedded (built in) or carla (a running server)")]
CarlaOpt = Annotated[Optional[str], typer.Option(
    "--carla", help="CARLA server as HOST:PORT or HOST:PORT/TOWN (with --sim carla; default localhost:2000)")]
CarlaTimeoutOpt = Annotated[float, typer.Option("--carla-timeout", help="seconds for each CARLA call")]
CarlaLoadTimeoutOpt = Annotated[float, typer.Option("--carla-load-timeout", help="seconds for loading a CARLA town")]
CarlaSpawnOpt = Annotated[int, typer.Option("--carla-spawn", min=0, help="CARLA spawn point index of the ego's start")]


def _sim_spec(sim: str, carla: Optional[str], timeout_s: float = 10.0, load_timeout_s: float = 120.0,
              spawn_index: int = 0):
    """The SimSpec of the --sim options (a bad value exits 2 with a message)."""
    from patchsim.sim.factory import SimSpec

    if sim not in ("embedded", "carla"):
        _fail(ValueError(f"--sim must be embedded or carla, not {sim!r}"))
    if sim == "embedded":
        if carla is not None:
            _fail(ValueError("--carla needs --sim carla"))
        return SimSpec()
    host, port, town = "localhost", 2000, None
    if carla:
        address, _, town_part = carla.partition("/")
        host, sep, port_text = address.partition(":")
        if not host or (sep and not port_text.isdigit()):
            _fail(ValueError(f"--carla must look like HOST:PORT or HOST:PORT/TOWN, not {carla!r}"))
        port = int(port_text) if sep else 2000
        town = town_part or None
    return _run(SimSpec, "carla", host, port, town, timeout_s, load_timeout_s, carla_spawn_index=spawn_index)


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (PatchsimError, FileNotFoundError, KeyError, ValueError) as exc:
        _fail(exc)
    except OSError as exc:  # an output that cannot be written: name the path, no traceback
        where = exc.filename if exc.filename is not None else ""
        _fail(PatchsimError(f"cannot write {where}: {exc.strerror or exc}" if where else f"{exc}"))


def with_cli_overrides(cfg, overrides: dict):
    """``cfg`` with command-line values set, checked like the same keys in a YAML file."""
    from patchsim.config import from_dict, to_dict

    if not overrides:
        return cfg
    return from_dict(type(cfg), {**to_dict(cfg), **overrides}, "command line")


def _load_config(cls, path: Optional[Path]):
    from patchsim.config import load_yaml

    return cls() if path is None else load_yaml(path, cls)


# --------------------------------------------------------------------------- sim


@sim_app.command("render")
def sim_render(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    seed: Optional[int] = typer.Option(None, help="randomize the scenario with this seed"),
    patch: Optional[Path] = typer.Option(None, help="patch image (PNG, RGB or RGBA) to show on --slot"),
    slot: Optional[str] = typer.Option(None, help="patch slot name for --patch"),
    video: bool = typer.Option(True, help="write video.mp4"),
    frames: bool = typer.Option(True, help="write every frame as frames/NNNNNN.png"),
    steps: Optional[int] = typer.Option(None, min=1, help="render at most this many steps"),
    sim: SimOpt = "embedded",
    carla: CarlaOpt = None,
    carla_timeout: CarlaTimeoutOpt = 10.0,
) -> None:
    """Drive SCENARIO with the ground-truth expert; write frames, video.mp4 and ground_truth.jsonl."""
    from patchsim.sim.render import render_scenario

    spec = _sim_spec(sim, carla, carla_timeout)
    patches = None
    if patch is not None:
        if slot is None:
            _fail(ValueError("--patch needs --slot"))
        patches = {slot: _run(_read_rgba, patch)}
    summary = _run(render_scenario, scenario, out, seed=seed, patches=patches, video=video, frames=frames,
                   max_steps=steps, sim_spec=spec)
    typer.echo(f"{summary.frames} frames at {summary.fps_rendered:.1f} frames/s -> {summary.out_dir}")


def _read_rgba(path: Path):
    import numpy as np
    from PIL import Image

    if not path.is_file():
        raise FileNotFoundError(f"{path}: patch image not found")
    img = Image.open(path)
    return np.asarray(img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB"))


# --------------------------------------------------------------------------- data


@data_app.command("generate")
def data_generate(
    out: Path = typer.Option(..., "--out", help="output directory"),
    task: str = typer.Option("detector", help="detector or lanekeeper"),
    config: Optional[Path] = typer.Option(None, help="YAML with DetectorDataConfig / LaneDataConfig keys"),
    seed: Optional[int] = typer.Option(None, help="override the config's seed"),
    scenes: Optional[int] = typer.Option(None, help="override the number of (training) scenes"),
    sim: SimOpt = "embedded",
    carla: CarlaOpt = None,
    carla_timeout: CarlaTimeoutOpt = 10.0,
) -> None:
    """Randomized scenes -> a YOLO dataset (detector) or expert-labelled frames (lanekeeper)."""
    spec = _sim_spec(sim, carla, carla_timeout)
    from patchsim.data.generate import (
        DetectorDataConfig,
        LaneDataConfig,
        generate_detector_dataset,
        generate_lane_dataset,
    )

    if task == "detector":
        cfg, fn, scenes_key = _run(_load_config, DetectorDataConfig, config), generate_detector_dataset, "train_scenes"
    elif task == "lanekeeper":
        cfg, fn, scenes_key = _run(_load_config, LaneDataConfig, config), generate_lane_dataset, "scenes"
    else:
        _fail(ValueError(f"--task must be detector or lanekeeper, not {task!r}"))
        return
    cfg = _run(with_cli_overrides, cfg, {k: v for k, v in ((scenes_key, scenes), ("seed", seed)) if v is not None})
    summary = _run(fn, cfg, out, sim_spec=spec)
    typer.echo(json.dumps(summary))


# --------------------------------------------------------------------------- victims


@victims_app.command("train-detector")
def victims_train_detector(
    out: Path = typer.Option(..., "--out", help="run directory"),
    data: Optional[Path] = typer.Option(None, help="data.yaml from `patchsim data generate`"),
    config: Optional[Path] = typer.Option(None, help="YAML with DetectorTrainConfig keys"),
    epochs: Optional[int] = typer.Option(None, help="override epochs"),
    device: Optional[str] = typer.Option(None, help="cpu or cuda"),
) -> None:
    """Train the default detector (YOLOv8, width 0.125) with the Ultralytics trainer, offline."""
    from patchsim.victims.train_detector import DetectorTrainConfig, train_detector

    cfg = _run(_load_config, DetectorTrainConfig, config)
    overrides = {k: v for k, v in (("data", None if data is None else str(data)), ("epochs", epochs),
                                   ("device", device)) if v is not None}
    cfg = _run(with_cli_overrides, cfg, overrides)
    summary = _run(train_detector, cfg, out)
    typer.echo(json.dumps(summary))


@victims_app.command("train-lanekeeper")
def victims_train_lanekeeper(
    out: Path = typer.Option(..., "--out", help="run directory"),
    config: Optional[Path] = typer.Option(None, help="YAML with LaneTrainConfig keys"),
) -> None:
    """Train PilotNet (behaviour cloning + DAgger) and the LaneNet marking segmenter."""
    from patchsim.victims.train_lanekeeper import LaneTrainConfig, train_lanekeepers

    cfg = _run(_load_config, LaneTrainConfig, config)
    summary = _run(train_lanekeepers, cfg, out)
    typer.echo(json.dumps({k: v for k, v in summary.items()}))


@victims_app.command("eval")
def victims_eval(
    detector: str = typer.Option("detector:default", help="detector spec or checkpoint path"),
    lanekeeper: list[str] = typer.Option(["lanekeeper:pilotnet", "lanekeeper:lanenet"], help="lane-keepers"),
    data: Optional[Path] = typer.Option(None, help="data.yaml with a held-out 'test' split; generated if absent"),
    seeds: int = typer.Option(10, min=1, help="closed-loop runs per lane scenario, and approach seeds for recall"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    skip_detector: bool = typer.Option(False, help="lane-keepers only"),
    skip_lanekeepers: bool = typer.Option(False, help="detector only"),
    sim: SimOpt = "embedded",
    carla: CarlaOpt = None,
    carla_timeout: CarlaTimeoutOpt = 10.0,
) -> None:
    """Clean quality: detector mAP50 and stop-sign recall by distance; lane-keepers closed loop."""
    from patchsim.config import check_device
    from patchsim.victims.report import evaluate_victims

    spec = _sim_spec(sim, carla, carla_timeout)
    _run(check_device, device, "--device")
    result = _run(evaluate_victims, detector, lanekeeper, data, seeds, device, not skip_detector,
                  not skip_lanekeepers, sim_spec=spec)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        from patchsim.victims.report import format_eval

        typer.echo(format_eval(result))


# --------------------------------------------------------------------------- attack, validate, pipeline


@app.command("attack")
def attack(
    out: Path = typer.Option(..., "--out", help="run directory"),
    config: Optional[str] = typer.Option(None, help="attack YAML, or a shipped name: " + ", ".join(shipped_configs())),
    resume: bool = typer.Option(False, help="continue the run in --out from its checkpoint"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N"),
    steps: Optional[int] = typer.Option(None, help="override the number of steps"),
    batch: Optional[int] = typer.Option(None, help="override the EOT batch size"),
    time_budget: Optional[float] = typer.Option(None, help="stop optimizing after this many seconds"),
    seed: Optional[int] = typer.Option(None, help="override the seed"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    sim: SimOpt = "embedded",
    carla: CarlaOpt = None,
) -> None:
    """Optimize a printable patch by EOT (default: stop-sign stickers against the default detector)."""
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.optimizer import run_attack

    if _sim_spec(sim, carla).backend != "embedded":
        _fail(ValueError("the attack's scene bank needs the label render (the slot's visibility and shading), "
                         "which the CARLA backend does not have: use --sim embedded, or photos (scenes.photos)"))

    cfg = _run(load_attack_config, config)
    overrides = {name: value for name, value in (("device", device), ("steps", steps), ("batch", batch),
                                                 ("time_budget_s", time_budget), ("seed", seed)) if value is not None}
    cfg = _run(with_cli_overrides, cfg, overrides)
    result = _run(run_attack, cfg, out, resume=resume, progress=progress)
    m = result.metrics
    typer.echo(json.dumps(m))
    typer.echo(f"patch -> {out}/patch.png   held-out success {m['heldout_success_rate']:.1%}"
               + (f"   clean detection {m['clean_detection_rate']:.1%} -> {m['adversarial_detection_rate']:.1%}"
                  if "clean_detection_rate" in m else ""))


@scenario_app.command("run")
def scenario_run(
    scenario: Path = typer.Argument(..., help="scenario YAML file"),
    out: Path = typer.Option(..., "--out", help="output directory (a killed run resumes into it)"),
    patch: list[Path] = typer.Option([], "--patch", help="attack run directory; repeat for several"),
    seeds: int = typer.Option(3, min=1, help="seeds, each driven clean and with each patch"),
    seed_start: int = typer.Option(0, min=0, help="first seed"),
    workers: int = typer.Option(1, min=1, help="episodes in parallel"),
    executor: str = typer.Option("local", help="local or ray"),
    detector: str = typer.Option("detector:default", help="detector in the planner"),
    lanekeeper: Optional[str] = typer.Option(None, help="lane-keeper at the wheel (default: the patch's victim)"),
    driver: str = typer.Option("auto", help="planner, lanekeeper, or auto (planner when the scenario has signs)"),
    confirm: str = typer.Option("2/3", help="planner: detections needed among recent frames, K/N"),
    min_score: float = typer.Option(0.25, min=0.0, max=1.0, help="planner: detection score that counts"),
    videos: int = typer.Option(1, min=0, help="annotated videos of the first seeds of each variant"),
    dry_run: bool = typer.Option(False, help="with --sim carla: print the scenario in CARLA terms and stop"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    sim: SimOpt = "embedded",
    carla: CarlaOpt = None,
    carla_timeout: CarlaTimeoutOpt = 10.0,
    carla_load_timeout: CarlaLoadTimeoutOpt = 120.0,
    carla_spawn: CarlaSpawnOpt = 0,
) -> None:
    """Closed-loop test: each seed driven clean and with each patch; results.json, videos, plots."""
    from patchsim.closedloop.report import comparison_table, format_table
    from patchsim.closedloop.run import run_scenario

    spec = _sim_spec(sim, carla, carla_timeout, carla_load_timeout, carla_spawn)
    if dry_run:
        _carla_dry_run(scenario, spec)
        return
    planner = _planner_config(confirm, min_score)
    summary = _run(run_scenario, scenario, out, [str(p) for p in patch], seeds, seed_start, workers, executor, spec,
                   detector, lanekeeper, driver, planner, videos, progress=progress)
    typer.echo(format_table(comparison_table(summary["variants"])))
    typer.echo(f"results -> {out}/results.json")


def _planner_config(confirm: str, min_score: float):
    from patchsim.closedloop.drivers import PlannerConfig
    from patchsim.config import from_dict

    k, sep, n = confirm.partition("/")
    if not (sep and k.isdigit() and n.isdigit()):
        _fail(ValueError(f"--confirm must look like K/N (e.g. 2/3), not {confirm!r}"))
    return _run(from_dict, PlannerConfig, {"confirm_k": int(k), "confirm_n": int(n), "min_score": min_score},
                "--confirm/--min-score")


def _carla_dry_run(scenario: Path, spec) -> None:
    from patchsim.sim.carla_dryrun import describe_in_carla, format_dry_run
    from patchsim.sim.scenario import load_scenario

    if spec.backend != "carla":
        _fail(ValueError("--dry-run shows the scenario in CARLA terms: use it with --sim carla"))
    sc = _run(load_scenario, scenario)
    typer.echo(format_dry_run(_run(describe_in_carla, sc, spawn_index=spec.carla_spawn_index, town=spec.carla_town)))


@scenario_app.command("sweep")
def scenario_sweep(
    sweep_file: Path = typer.Argument(..., help="sweep YAML (see scenarios/sweeps/)"),
    out: Path = typer.Option(..., "--out", help="output directory (a killed sweep resumes into it)"),
    patch: list[Path] = typer.Option([], "--patch", help="attack run directory, added to the sweep file's"),
    workers: int = typer.Option(2, min=1, help="episodes in parallel (worker processes or Ray actors)"),
    executor: str = typer.Option("local", help="local (worker processes) or ray"),
    ray_address: Optional[str] = typer.Option(None, help="Ray cluster address (default: a local Ray instance)"),
    progress: bool = typer.Option(True, help="show a progress bar"),
    detector: Optional[str] = typer.Option(None, help="detector for the planner, in place of the sweep file's "
                                                      "(a hardened model, or another detector for transfer)"),
    lanekeeper: Optional[str] = typer.Option(None, help="lane-keeper at the wheel, in place of the sweep file's"),
    sim: SimOpt = "embedded",
    carla: CarlaOpt = None,
    carla_timeout: CarlaTimeoutOpt = 10.0,
    carla_load_timeout: CarlaLoadTimeoutOpt = 120.0,
    carla_spawn: CarlaSpawnOpt = 0,
) -> None:
    """Sweep a scenario over seeds and conditions, clean vs patched: episodes.parquet, summary.json, report.html."""
    from patchsim.closedloop.report import comparison_table, format_table
    from patchsim.closedloop.sweep import run_sweep

    spec = _sim_spec(sim, carla, carla_timeout, carla_load_timeout, carla_spawn)
    summary = _run(run_sweep, sweep_file, out, workers, executor, [str(p) for p in patch], spec, ray_address,
                   progress=progress, detector=detector, lanekeeper=lanekeeper)
    typer.echo(format_table(comparison_table(summary["variants"])))
    typer.echo(f"{summary['episodes']} episodes ({summary['episodes_resumed']} resumed) in {summary['wall_s']} s "
               f"-> {out}/report.html")


@app.command("validate")
def validate(
    run_dir: Path = typer.Argument(..., help="attack run directory"),
    out: Optional[Path] = typer.Option(None, help="output directory (default RUN_DIR/validation)"),
    seeds: int = typer.Option(3, min=1, help="closed-loop runs, each clean and patched"),
    scenario: Optional[Path] = typer.Option(None, help="scenario YAML (default: the attack's)"),
    workers: int = typer.Option(1, min=1, help="episodes in parallel"),
    videos: int = typer.Option(1, min=0, help="annotated videos of the first seeds"),
) -> None:
    """Closed-loop scenario test of a patch on the scenario it was made for (`scenario run` with its defaults)."""
    from patchsim.closedloop.report import comparison_table, format_table
    from patchsim.closedloop.run import validate_run

    summary = _run(validate_run, run_dir, out, seeds, scenario, workers, videos)
    typer.echo(format_table(comparison_table(summary["variants"])))


@app.command("field")
def field_test(
    source: Path = typer.Argument(..., help="a video (MP4, ...) or a folder of images of a drive-by"),
    out: Path = typer.Option(..., "--out", help="output directory"),
    victim: str = typer.Option("detector:default", help="detector spec or checkpoint"),
    sign_class: str = typer.Option("stop_sign", help="the sign class to look for"),
    confirm: str = typer.Option("2/3", help="planner confirmation, K/N"),
    min_score: float = typer.Option(0.25, min=0.0, max=1.0, help="detection score that counts"),
    fps: Optional[float] = typer.Option(None, help="frame rate of an image folder (default 20)"),
) -> None:
    """Field test of a printed patch: the victim on every frame of a real drive-by, annotated video and metrics."""
    from patchsim.closedloop.field import field_test as run_field

    planner = _planner_config(confirm, min_score)
    summary = _run(run_field, source, out, victim, sign_class, planner, fps)
    typer.echo(json.dumps({k: v for k, v in summary.items() if k != "frames"}))


@app.command("pipeline")
def pipeline(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output directory (a killed run resumes into it)"),
    config: Optional[str] = typer.Option(None, help="attack YAML or shipped name (default stop_sticker_vanish)"),
    heldout_seeds: int = typer.Option(10, min=1, help="held-out closed-loop conditions, each clean and patched"),
    workers: int = typer.Option(2, min=1, help="closed-loop episodes in parallel"),
    sweep: Optional[Path] = typer.Option(None, help="held-out sweep file (default: scenarios/sweeps/ for the slot)"),
    paper: str = typer.Option("A4", help="paper for the printable"),
    printables: Path = typer.Option(Path("printables"), help="folder for the printable PDF"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """The main job: make a patch, test it in closed loop under held-out conditions, write the printable PDF."""
    from patchsim.closedloop.report import comparison_table, format_table
    from patchsim.pipeline import run_pipeline

    summary = _run(run_pipeline, out, config, heldout_seeds, workers, printables, paper, sweep, progress)
    m = summary["attack"]
    typer.echo(f"attack: held-out per-frame success {m['heldout_success_rate']:.1%} -> {summary['attack_dir']}")
    typer.echo(f"closed loop, {summary['heldout']['episodes']} held-out episodes ({out}/heldout/report.html):")
    typer.echo(format_table(comparison_table(summary["heldout"]["variants"])))
    typer.echo(f"printable -> {summary['printable']}")


# --------------------------------------------------------------------------- printing


@app.command("print")
def print_patch(
    source: Path = typer.Argument(..., help="attack run directory or its patch.json"),
    out: Optional[Path] = typer.Option(None, "--out", help="PDF path (default printables/<patch id>.pdf)"),
    paper: str = typer.Option("A4", help="A0-A4, Letter, Legal, Tabloid, or custom"),
    custom_size_mm: Optional[str] = typer.Option(None, help="WIDTHxHEIGHT in mm for --paper custom"),
    orientation: str = typer.Option("auto", help="auto, portrait or landscape"),
    margin_mm: float = typer.Option(10.0, help="page margin in mm"),
    overlap_mm: float = typer.Option(10.0, help="tile overlap in mm"),
    max_tiles: int = typer.Option(64, help="refuse tilings with more pages than this"),
    png: Optional[Path] = typer.Option(None, help="also write a PNG/TIFF with dpi metadata"),
    svg: Optional[Path] = typer.Option(None, help="also write the cut outlines as SVG (mm)"),
) -> None:
    """Print-ready PDF at true scale: tiles with marks and an assembly page, or sticker sheets and a placement guide."""
    from patchsim.printing import export_cut_svg, export_pdf, export_raster

    size = None
    if custom_size_mm:
        try:
            w, h = (float(v) for v in custom_size_mm.lower().split("x"))
            size = (w, h)
        except ValueError:
            _fail(ValueError(f"--custom-size-mm must look like 300x400, not {custom_size_mm!r}"))
    job = _run(export_pdf, source, out, paper=paper, orientation=orientation, margin_mm=margin_mm,
               overlap_mm=overlap_mm, custom_size_mm=size, max_tiles=max_tiles)
    typer.echo(job.summary())
    if png is not None:
        typer.echo(f"raster -> {_run(export_raster, source, png)}")
    if svg is not None:
        typer.echo(f"cut outlines -> {_run(export_cut_svg, source, svg)}")


@app.command("chart")
def chart(
    out: Path = typer.Option(Path("printables/chart.pdf"), "--out", help="PDF path"),
    patches: int = typer.Option(140, help="colour patches on the chart"),
    paper: str = typer.Option("A4", help="paper size"),
) -> None:
    """A colour chart framed by ArUco markers, to print and photograph for `patchsim calibrate`."""
    from patchsim.printing import make_chart

    _run(make_chart, out, patches=patches, paper=paper)
    typer.echo(f"chart -> {out} (print it at 100 % scale, photograph it flat under even light)")


@app.command("calibrate")
def calibrate_printer(
    photo: Path = typer.Argument(..., help="photo of the printed chart"),
    name: str = typer.Option(..., "--name", help="profile name, saved as printables/profiles/NAME.json"),
    chart_layout: Optional[Path] = typer.Option(None, "--chart", help="chart layout JSON if not the default chart"),
    profiles_dir: Path = typer.Option(Path("printables/profiles"), help="folder the profile is saved in"),
) -> None:
    """Fit a printer colour profile from a photo of the chart; the attack uses it with printer_profile: NAME."""
    from patchsim.printing.calibrate import calibrate

    result = _run(calibrate, photo, name, out_dir=profiles_dir, chart=chart_layout)
    typer.echo(f"profile -> {result.path}   mean Delta E (CIEDE2000) {float(result.delta_e.mean()):.2f}")


@app.command("cache")
def cache(
    clear: bool = typer.Option(False, "--clear", help="delete the cached entries"),
    kind: Optional[str] = typer.Option(None, help="only this kind (e.g. scenes)"),
) -> None:
    """The shared cache (scene banks that runs reuse): where it is and its size; --clear empties it."""
    from patchsim import cache as shared

    if kind is not None:
        _run(shared.check_kind, kind)
    if clear:
        freed = shared.clear(kind)
        typer.echo(f"cleared {freed / 1e6:.1f} MB from {shared.cache_dir()}")
        return
    info = shared.usage()
    typer.echo(f"{info['dir']}: {info['bytes'] / 1e6:.1f} MB")
    for name, k in info["kinds"].items():
        typer.echo(f"  {name}: {k['entries']} entries, {k['bytes'] / 1e6:.1f} MB")


# --------------------------------------------------------------------------- hardening


@harden_app.command("detector")
def harden_detector(
    out: Path = typer.Option(..., "--out", help="run directory (a killed run resumes after its last finished round)"),
    config: Optional[Path] = typer.Option(None, help="hardening YAML (default: the built-in defaults)"),
    baseline: Optional[str] = typer.Option(None, help="detector to harden (default detector:default)"),
    data: Optional[str] = typer.Option(None, help="data.yaml of `patchsim data generate --task detector`"),
    rounds: Optional[int] = typer.Option(None, help="override the number of rounds"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N, or 0,1 for Ultralytics' multi-GPU training"),
    seed: Optional[int] = typer.Option(None, help="override the seed"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Adversarial training of a detector: rounds of attacks on it and fine-tuning on patched signs."""
    from patchsim.harden.config import load_harden_config
    from patchsim.harden.detector import harden_detector as run

    cfg = _run(load_harden_config, config, baseline=baseline, data=data, rounds=rounds, device=device, seed=seed)
    report = _run(run, cfg, out, progress=progress)
    for r in report["rounds"]:
        rates = ", ".join(f"{a['attack']} {a['heldout_success_rate']:.0%}" for a in r["attacks"])
        typer.echo(f"round {r['round']}: attacks on the model entering it: {rates}; "
                   f"val mAP50 after {r['val_metrics'].get('metrics/mAP50(B)', float('nan')):.3f}")
    typer.echo(f"hardened detector -> {report['detector']} (Ultralytics: {report['ultralytics_weights']}); "
               f"judge it with `patchsim harden eval --model {report['detector']}`")


@harden_app.command("lanekeeper")
def harden_lanekeeper(
    out: Path = typer.Option(..., "--out", help="run directory (a killed run resumes after its last finished round)"),
    model: Optional[str] = typer.Option(None, help="pilotnet or lanenet (default pilotnet)"),
    config: Optional[Path] = typer.Option(None, help="hardening YAML (default: the built-in defaults)"),
    baseline: Optional[str] = typer.Option(None, help="lane-keeper to harden (default lanekeeper:MODEL)"),
    rounds: Optional[int] = typer.Option(None, help="override the number of rounds"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N"),
    seed: Optional[int] = typer.Option(None, help="override the seed"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Adversarial training of a lane-keeper: rounds of road-marking attacks and DAgger drives over them."""
    from patchsim.harden.config import load_harden_config
    from patchsim.harden.lanekeeper import HardenLaneKeeperConfig
    from patchsim.harden.lanekeeper import harden_lanekeeper as run

    cfg = _run(load_harden_config, config, HardenLaneKeeperConfig, model=model, baseline=baseline, rounds=rounds,
               device=device, seed=seed)
    report = _run(run, cfg, out, progress=progress)
    for r in report["rounds"]:
        rates = ", ".join(f"{a['attack']} {a['heldout_success_rate']:.0%}" for a in r["attacks"])
        typer.echo(f"round {r['round']}: attacks on the model entering it: {rates}; "
                   f"{r['frames_patched']} patched and {r['frames_clean']} clean frames")
    typer.echo(f"hardened lane-keeper -> {report['lanekeeper']}; judge it with "
               f"`patchsim harden eval --model {report['lanekeeper']} --baseline {report['baseline']}`")


@harden_app.command("eval")
def harden_eval(
    out: Path = typer.Option(..., "--out", help="output directory (a killed evaluation resumes its attacks)"),
    model: Optional[str] = typer.Option(None, help="the hardened model (checkpoint path, detector:NAME, lanekeeper:NAME)"),
    baseline: Optional[str] = typer.Option(None, help="the model it was hardened from (default detector:default)"),
    config: Optional[Path] = typer.Option(None, help="evaluation YAML"),
    data: Optional[str] = typer.Option(None, help="data.yaml whose test split gives clean mAP50"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """Judge a hardened model: clean quality, fresh adaptive attacks, transfer, and closed loop, vs its baseline."""
    from patchsim.harden.config import HardenEvalConfig, load_harden_config
    from patchsim.harden.evaluate import evaluate_hardening

    if model is None and config is None:
        _fail(ValueError("--model is needed (or a --config that names model)"))
    cfg = _run(load_harden_config, config, HardenEvalConfig, model=model, baseline=baseline, data=data, device=device)
    report = _run(evaluate_hardening, cfg, out, progress=progress)
    typer.echo((out / "report.md").read_text())
    typer.echo(f"-> {out}/report.json ({report['wall_s']} s)")


def main() -> None:
    try:
        app()
    except PatchsimError as exc:  # pragma: no cover - typer handles most paths
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
