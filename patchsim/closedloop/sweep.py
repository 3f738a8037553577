"""Sweeps: one scenario, clean and patched, over seeds and varied conditions, in parallel.

A sweep file (YAML) names the scenario, the patches, the seeds, and the conditions to vary::

    name: stop_sign_heldout
    scenario: scenarios/stop_sign_approach.yaml
    patches: [runs/demo/attack]         # attack run directories (or give --patch on the command line)
    seeds: 1                             # seeds per condition
    seed_start: 5000
    random:                              # a seeded random sample of conditions...
      lighting.preset: [dusk, overcast]  # a list of choices
      signs.0.offset_m: [1.0, 5.5]       # [low, high]: uniform
    samples: 20                          # ... of this many conditions
    grid:                                # and/or a grid (every combination of the values)
      camera.height_m: [1.2, 1.6]

Any scenario key can be varied (dotted, as in the scenario's ``randomize``). Conditions are the
grid's combinations, each crossed with ``samples`` random draws (or one draw of nothing). Each
condition runs ``seeds`` seeds, each seed clean and with each patch: the episodes of one seed
differ only in the patch. Paths are relative to the current directory, else to the sweep file.

Outputs in the sweep's directory: ``episodes/<job id>.json`` (one per episode, written as each
finishes, so a killed sweep resumes), ``episodes.parquet`` (one row per episode),
``summary.json`` (outcome rates with 95 % Wilson intervals, per variant), heatmaps of outcome
rates over two swept keys, and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from patchsim.closedloop.drivers import PlannerConfig
from patchsim.closedloop.jobs import EpisodeJob, planner_items
from patchsim.config import _Ctx, _build, param, read_yaml, to_dict
from patchsim.errors import ConfigError
from patchsim.sim.factory import SimSpec


@dataclass
class CarlaServer:
    host: str = param("localhost", help="server address")
    port: int = param(2000, range=(1, 65535), help="RPC port")
    tm_port: int = param(8000, range=(1, 65535), help="Traffic Manager port")


@dataclass
class SweepSpec:
    scenario: str = param(help="scenario YAML file")
    name: str = param("sweep", help="label for reports")
    patches: list[str] = param(default_factory=list, help="attack run directories to test")
    seeds: int = param(10, range=(1, 100000), help="seeds per condition")
    seed_start: int = param(1000, range=(0, 2**31 - 1), help="first seed")
    driver: Literal["auto", "planner", "lanekeeper"] = param(
        "auto", help="planner (detector in the loop) or lanekeeper; auto: planner when the scenario has signs")
    detector: str = param("detector:default", help="detector for the planner")
    lanekeeper: str = param("lanekeeper:pilotnet", help="lane-keeper at the wheel")
    planner: PlannerConfig = param(default_factory=PlannerConfig)
    grid: dict[str, list[Any]] = param(default_factory=dict, help="dotted key -> values, every combination")
    random: dict[str, list[Any]] = param(default_factory=dict, help="dotted key -> [low, high] or choices")
    samples: int = param(0, range=(0, 100000), help="random conditions drawn from `random`")
    sample_seed: int = param(0, range=(0, 2**31 - 1), help="seed of the random conditions")
    videos: int = param(1, range=(0, 100000), help="annotated videos of the first episodes of each variant")
    carla_servers: list[CarlaServer] = param(default_factory=list, help="one CARLA server per worker")

    def __post_init__(self) -> None:
        from patchsim.config import FieldError

        if self.random and not self.samples:
            raise FieldError("samples", "`random` needs samples > 0 (how many conditions to draw)")


def _resolve_path(value: str, base: Path) -> str:
    p = Path(value)
    if p.is_absolute() or p.exists() or not (base / p).exists():
        return str(p)
    return str(base / p)


def load_sweep(path: str | Path) -> tuple[SweepSpec, Any]:
    """Load a sweep file and check it: every varied key and value against the scenario.

    Returns:
        (spec, scenario) with paths resolved.

    Raises:
        ConfigError: naming the file, key and line.
    """
    from patchsim.sim.scenario import _check_randomize_entry, load_scenario, with_overrides

    located = read_yaml(path)
    ctx = _Ctx(str(path), located.lines)
    spec = _build(SweepSpec, located.data, (), ctx)
    base = Path(path).parent
    spec.scenario = _resolve_path(spec.scenario, base)
    spec.patches = [_resolve_path(p, base) for p in spec.patches]
    try:
        scenario = load_scenario(spec.scenario)
    except ConfigError as exc:
        if not Path(spec.scenario).is_file():
            raise ctx.error(f"scenario file {spec.scenario!r} not found", ("scenario",)) from exc
        raise
    for key, values in spec.grid.items():
        if not isinstance(values, list) or not values:
            raise ctx.error("expected a non-empty list of values", ("grid", key))
        for v in values:
            try:
                with_overrides(scenario, {key: v}, str(path))
            except ConfigError as exc:
                raise ctx.error(f"value {v!r}: {exc.message}", ("grid", key)) from exc
    for key, values in spec.random.items():
        try:
            _check_randomize_entry(scenario, key, values)
        except (ValueError, ConfigError) as exc:
            raise ctx.error(str(exc), ("random", key)) from exc
    return spec, scenario


def conditions(spec: SweepSpec, scenario) -> list[dict[str, Any]]:
    """The sweep's conditions: grid combinations crossed with the seeded random draws."""
    from patchsim.sim.scenario import draw_value

    keys = list(spec.grid)
    grid = [dict(zip(keys, combo)) for combo in itertools.product(*spec.grid.values())] or [{}]
    draws: list[dict[str, Any]] = [{}]
    if spec.random:
        rng = random.Random(spec.sample_seed)
        draws = []
        for _ in range(spec.samples):
            draw = {}
            for key in sorted(spec.random):
                value = draw_value(scenario, key, spec.random[key], rng)
                draw[key] = round(value, 4) if isinstance(value, float) else value
            draws.append(draw)
    return [{**g, **d} for g in grid for d in draws]


def driver_for(spec_driver: str, scenario) -> str:
    if spec_driver != "auto":
        return spec_driver
    return "planner" if scenario.signs else "lanekeeper"


def check_victims(spec: SweepSpec, scenario) -> None:
    """The models the episodes will load exist: a CheckpointError or FileNotFoundError naming the spec, before
    any episode starts (a wrong name would otherwise fail every episode in its worker)."""
    from patchsim.victims.registry import resolve_weights

    chosen = driver_for(spec.driver, scenario)
    needed = [("detector", spec.detector)] if chosen == "planner" else [("lanekeeper", spec.lanekeeper)]
    if chosen == "lanekeeper" and scenario.signs:
        needed.append(("detector", spec.detector))
    for kind, victim in needed:
        path = resolve_weights(victim, kind)
        if not path.is_file():
            raise FileNotFoundError(f"{victim}: {kind} checkpoint not found")


def sweep_jobs(spec: SweepSpec, scenario, out_dir: Path, sim: str = "embedded") -> list[EpisodeJob]:
    """Every episode of the sweep, in a fixed order (condition, seed, clean then each patch)."""
    from patchsim.closedloop.patches import check_slot, load_patch

    refs = [load_patch(p) for p in spec.patches]
    for ref in refs:
        check_slot(ref, scenario, spec.scenario)
    names = [r.name for r in refs]
    if len(set(names)) != len(names):
        raise ConfigError(f"two patches share the name {sorted(n for n in names if names.count(n) > 1)[0]!r}",
                          key="patches")
    driver = driver_for(spec.driver, scenario)
    victim = spec.detector if driver == "planner" else spec.lanekeeper
    planner = planner_items(spec.planner)
    jobs = []
    videos: dict[str, int] = {}
    for ci, cond in enumerate(conditions(spec, scenario)):
        overrides = tuple(sorted(cond.items()))
        for k in range(spec.seeds):
            seed = spec.seed_start + k
            for variant, patch in [("clean", None)] + [(r.name, r.path) for r in refs]:
                video = None
                if videos.get(variant, 0) < spec.videos:
                    videos[variant] = videos.get(variant, 0) + 1
                    video = str(out_dir / "videos" / f"{variant}_c{ci}_s{seed}.mp4")
                jobs.append(EpisodeJob(spec.scenario, seed, driver, victim, overrides, patch, variant, ci, planner,
                                       sim, video))
    return jobs


def _progress_line(results: list[dict[str, Any]]) -> str:
    """Running rate of the headline outcome per variant, for the progress bar."""
    from patchsim.closedloop.report import headline_outcome

    by: dict[str, list[dict]] = {}
    for r in results:
        by.setdefault(r["job"]["variant"], []).append(r["outcome"])
    key = headline_outcome([r["outcome"] for r in results])
    return ", ".join(f"{variant}: {key} {sum(bool(o[key]) for o in outs)}/{len(outs)}" for variant, outs in by.items())


def run_sweep(sweep_file: str | Path, out_dir: str | Path, workers: int = 1, executor: str = "local",
              patches: list[str] | None = None, sim: SimSpec | None = None, ray_address: str | None = None,
              device: str = "cpu", progress: bool = True, report: bool = True,
              samples: int | None = None, detector: str | None = None,
              lanekeeper: str | None = None) -> dict[str, Any]:
    """Run (or resume) a sweep; write its episodes, table, summary and report into ``out_dir``.

    Args:
        patches: attack run directories added to the sweep file's.
        detector, lanekeeper: the victims in place of the sweep file's (a hardened model, say).
        samples: draw this many random conditions instead of the file's ``samples`` (a random sweep).
        sim: the simulator (default embedded); for CARLA the sweep file's ``carla_servers`` give
            each worker its own server.
    """
    from patchsim.closedloop.report import write_sweep_outputs
    from patchsim.runs import write_json

    spec, scenario = load_sweep(sweep_file)
    spec.patches = spec.patches + [str(p) for p in (patches or [])]
    if detector is not None:
        spec.detector = str(detector)
    if lanekeeper is not None:
        spec.lanekeeper = str(lanekeeper)
    if samples is not None:
        if not spec.random:
            raise ConfigError("the sweep draws no random conditions, so its number of samples cannot be set",
                              sweep_file, "samples")
        spec.samples = samples
    results, info = execute_spec(spec, scenario, Path(out_dir), "scenario sweep", workers, executor, sim,
                                 ray_address, device, progress)
    summary = write_sweep_outputs(Path(out_dir), spec, results, report=report)
    summary.update(info)
    write_json(Path(out_dir) / "summary.json", summary)
    return summary


def execute_spec(spec: SweepSpec, scenario, out: Path, command: str, workers: int = 1, executor: str = "local",
                 sim: SimSpec | None = None, ray_address: str | None = None, device: str = "cpu",
                 progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run (or resume) the episodes of ``spec`` into ``out/episodes``; returns their results and run facts."""
    from tqdm import tqdm

    from patchsim.closedloop.executors import check_executor, execute
    from patchsim.runs import manifest, write_json

    check_executor(executor, workers)
    check_victims(spec, scenario)
    sim = sim or SimSpec()
    specs: SimSpec | list[SimSpec] = sim
    if sim.backend == "carla" and spec.carla_servers:
        specs = [dataclasses.replace(sim, carla_host=s.host, carla_port=s.port, carla_tm_port=s.tm_port)
                 for s in spec.carla_servers]
    jobs = sweep_jobs(spec, scenario, out, sim.backend)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", {"spec": to_dict(spec), "episodes": len(jobs),
                                    "run": manifest(command, spec.seed_start, None, workers=workers,
                                                    executor=executor, simulator=sim.to_json())})
    done: list[dict[str, Any]] = []
    resumed = [0]
    bar = tqdm(total=len(jobs), desc=spec.name, disable=not progress, unit="episode")

    def on_result(result: dict[str, Any], ran_now: bool) -> None:
        bar.update(1)
        if "error" in result:
            return
        done.append(result)
        resumed[0] += 0 if ran_now else 1
        bar.set_postfix_str(_progress_line(done))

    t0 = time.perf_counter()
    try:
        results = execute(jobs, out / "episodes", executor, workers, specs, device, ray_address, on_result)
    finally:
        bar.close()
    info = {"episodes_resumed": resumed[0], "episodes_run": len(results) - resumed[0],
            "wall_s": round(time.perf_counter() - t0, 1), "workers": workers, "executor": executor,
            "simulator": sim.to_json()}
    return results, info
