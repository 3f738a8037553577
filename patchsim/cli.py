"""The ``patchsim`` command. Each command parses its options, calls one library function and
prints a short summary; the work and the results live in the library and the run directory."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from patchsim.errors import PatchsimError

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Physical-world adversarial patches for driving perception: generate, validate, harden.\n\n"
                       "For testing perception systems you own, in simulation and on closed courses only.")
sim_app = typer.Typer(no_args_is_help=True, help="The driving simulator.")
data_app = typer.Typer(no_args_is_help=True, help="Labelled data from the simulator.")
victims_app = typer.Typer(no_args_is_help=True, help="Victim perception models: train and evaluate.")
app.add_typer(sim_app, name="sim")
app.add_typer(data_app, name="data")
app.add_typer(victims_app, name="victims")


def _fail(exc: Exception) -> None:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _run(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (PatchsimError, FileNotFoundError, KeyError, ValueError) as exc:
        _fail(exc)


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
    steps: Optional[int] = typer.Option(None, help="render at most this many steps"),
) -> None:
    """Drive SCENARIO with the ground-truth expert; write frames, video.mp4 and ground_truth.jsonl."""
    from patchsim.sim.render import render_scenario

    patches = None
    if patch is not None:
        if slot is None:
            _fail(ValueError("--patch needs --slot"))
        patches = {slot: _run(_read_rgba, patch)}
    summary = _run(render_scenario, scenario, out, seed=seed, patches=patches, video=video, max_steps=steps)
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
) -> None:
    """Randomized scenes -> a YOLO dataset (detector) or expert-labelled frames (lanekeeper)."""
    from patchsim.data.generate import (
        DetectorDataConfig,
        LaneDataConfig,
        generate_detector_dataset,
        generate_lane_dataset,
    )

    if task == "detector":
        cfg = _run(_load_config, DetectorDataConfig, config)
        if scenes is not None:
            cfg.train_scenes = scenes
        fn = generate_detector_dataset
    elif task == "lanekeeper":
        cfg = _run(_load_config, LaneDataConfig, config)
        if scenes is not None:
            cfg.scenes = scenes
        fn = generate_lane_dataset
    else:
        _fail(ValueError(f"--task must be detector or lanekeeper, not {task!r}"))
        return
    if seed is not None:
        cfg.seed = seed
    summary = _run(fn, cfg, out)
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
    if data is not None:
        cfg.data = str(data)
    if epochs is not None:
        cfg.epochs = epochs
    if device is not None:
        cfg.device = device
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
    seeds: int = typer.Option(10, help="closed-loop runs per lane scenario, and approach seeds for recall"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("cpu", help="cpu or cuda"),
    skip_detector: bool = typer.Option(False, help="lane-keepers only"),
    skip_lanekeepers: bool = typer.Option(False, help="detector only"),
) -> None:
    """Clean quality: detector mAP50 and stop-sign recall by distance; lane-keepers closed loop."""
    from patchsim.victims.report import evaluate_victims

    result = _run(evaluate_victims, detector, lanekeeper, data, seeds, device, not skip_detector,
                  not skip_lanekeepers)
    if as_json:
        typer.echo(json.dumps(result))
    else:
        from patchsim.victims.report import format_eval

        typer.echo(format_eval(result))


# --------------------------------------------------------------------------- attack, validate, pipeline


@app.command("attack")
def attack(
    out: Path = typer.Option(..., "--out", help="run directory"),
    config: Optional[str] = typer.Option(None, help="attack YAML, or a shipped name: " + ", ".join(
        ["stop_sticker_vanish", "stop_poster_vanish", "stop_to_speed_limit", "road_steer_pilotnet"])),
    resume: bool = typer.Option(False, help="continue the run in --out from its checkpoint"),
    device: Optional[str] = typer.Option(None, help="cpu, cuda or cuda:N"),
    steps: Optional[int] = typer.Option(None, help="override the number of steps"),
    batch: Optional[int] = typer.Option(None, help="override the EOT batch size"),
    time_budget: Optional[float] = typer.Option(None, help="stop optimizing after this many seconds"),
    seed: Optional[int] = typer.Option(None, help="override the seed"),
    progress: bool = typer.Option(True, help="show a progress bar"),
) -> None:
    """Optimize a printable patch by EOT (default: stop-sign stickers against the default detector)."""
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.optimizer import run_attack

    cfg = _run(load_attack_config, config)
    for name, value in (("device", device), ("steps", steps), ("batch", batch), ("time_budget_s", time_budget),
                        ("seed", seed)):
        if value is not None:
            setattr(cfg, name, value)
    result = _run(run_attack, cfg, out, resume=resume, progress=progress)
    m = result.metrics
    typer.echo(json.dumps(m))
    typer.echo(f"patch -> {out}/patch.png   held-out success {m['heldout_success_rate']:.1%}"
               + (f"   clean detection {m['clean_detection_rate']:.1%} -> {m['adversarial_detection_rate']:.1%}"
                  if "clean_detection_rate" in m else ""))


@app.command("validate")
def validate(
    run_dir: Path = typer.Argument(..., help="attack run directory"),
    out: Optional[Path] = typer.Option(None, help="output directory (default RUN_DIR/validation)"),
    seeds: int = typer.Option(3, help="closed-loop runs, each clean and patched"),
    scenario: Optional[str] = typer.Option(None, help="scenario YAML (default: the attack's)"),
    video: bool = typer.Option(True, help="write videos of seed 0"),
) -> None:
    """Closed-loop scenario test of a patch: does the car stop at the line, does it stay in lane?"""
    from patchsim.scenario.validate import validate_run

    result = _run(validate_run, run_dir, out, seeds, scenario, video)
    typer.echo(json.dumps(result["summary"]))


@app.command("pipeline")
def pipeline(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="output directory"),
    config: Optional[str] = typer.Option(None, help="attack YAML or shipped name (default stop_sticker_vanish)"),
    seeds: int = typer.Option(2, help="closed-loop validation runs"),
    paper: str = typer.Option("A4", help="paper for the printable"),
    progress: bool = typer.Option(True, help="show progress bars"),
) -> None:
    """The main job: make a patch, validate it in the simulator, write the printable PDF into printables/."""
    from patchsim.pipeline import run_pipeline

    summary = _run(run_pipeline, out, config, seeds, "printables", paper, progress)
    typer.echo(json.dumps(summary))


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
) -> None:
    """Fit a printer colour profile from a photo of the chart; the attack uses it with printer_profile: NAME."""
    from patchsim.printing.calibrate import calibrate

    result = _run(calibrate, photo, name, chart=chart_layout)
    typer.echo(f"profile -> {result.path}   mean Delta E (CIEDE2000) {result.delta_e:.2f}")


def main() -> None:
    try:
        app()
    except PatchsimError as exc:  # pragma: no cover - typer handles most paths
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
