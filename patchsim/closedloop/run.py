"""``patchsim scenario run``: one scenario, each seed driven clean and with each patch.

Writes into the output directory ``results.json`` (atomically: the scenario, simulator, victims,
patches, seeds, every episode's per-frame records and outcome, and a summary per variant),
``episodes/`` (one file per finished episode, so a killed run resumes), annotated videos of the
first seeds, and plots of detection confidence against distance and lateral offset against time
with clean and patched overlaid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from patchsim.closedloop.drivers import PlannerConfig
from patchsim.closedloop.sweep import SweepSpec, driver_for, execute_spec
from patchsim.config import to_dict
from patchsim.runs import write_json
from patchsim.sim.factory import SimSpec


def run_scenario(scenario: str | Path, out_dir: str | Path, patches: list[str] | None = None, seeds: int = 3,
                 seed_start: int = 0, workers: int = 1, executor: str = "local", sim: SimSpec | None = None,
                 detector: str = "detector:default", lanekeeper: str | None = None, driver: str = "auto",
                 planner: PlannerConfig | None = None, videos: int = 1, overrides: dict[str, Any] | None = None,
                 device: str = "cpu", progress: bool = True) -> dict[str, Any]:
    """Drive ``scenario`` for ``seeds`` seeds, clean and with each patch, under identical conditions.

    Args:
        patches: attack run directories.
        lanekeeper: the lane-keeper at the wheel; None takes the patches' victim when it is a
            lane-keeper, else ``lanekeeper:pilotnet``.
        driver: ``planner``, ``lanekeeper`` or ``auto`` (planner when the scenario has signs).
        videos: annotated videos of the first ``videos`` seeds of each variant.
        overrides: dotted scenario keys to set for every episode.

    Returns:
        the summary (also in ``results.json``).
    """
    from patchsim.closedloop.patches import load_patch
    from patchsim.closedloop.report import by_variant, plot_runs
    from patchsim.sim.scenario import load_scenario, with_overrides

    scenario_path = str(scenario)
    sc = load_scenario(scenario_path)
    if overrides:
        with_overrides(sc, overrides, "--set")
    patches = [str(p) for p in (patches or [])]
    refs = [load_patch(p) for p in patches]
    if lanekeeper is None:
        lk = [r.victim for r in refs if r.victim.startswith("lanekeeper:") or r.slot_kind == "road"]
        lanekeeper = lk[0] if lk else "lanekeeper:pilotnet"
    spec = SweepSpec(name=sc.name, scenario=scenario_path, patches=patches, seeds=seeds, seed_start=seed_start,
                     driver=driver, detector=detector, lanekeeper=lanekeeper, planner=planner or PlannerConfig(),
                     grid={k: [v] for k, v in (overrides or {}).items()}, videos=videos)
    out = Path(out_dir)
    results, info = execute_spec(spec, sc, out, "scenario run", workers, executor, sim, None, device, progress)
    plots = plot_runs(results, out)
    chosen = driver_for(driver, sc)
    summary = {"scenario": sc.name, "scenario_file": scenario_path, "driver": chosen,
               "victim": detector if chosen == "planner" else lanekeeper, "patches": [r.name for r in refs],
               "seeds": list(range(seed_start, seed_start + seeds)), "variants": by_variant(results),
               "plots": [p.name for p in plots], **info}
    write_json(out / "results.json", {**summary, "planner": to_dict(spec.planner), "episodes": results})
    return summary


def validate_run(run_dir: str | Path, out_dir: str | Path | None = None, seeds: int = 3,
                 scenario: str | Path | None = None, workers: int = 1, videos: int = 1,
                 progress: bool = True) -> dict[str, Any]:
    """:func:`run_scenario` of an attack run's patch on the scenario it was made for (or ``scenario``);
    results in ``RUN_DIR/validation`` unless ``out_dir``."""
    from patchsim.closedloop.patches import load_patch
    from patchsim.config import read_yaml
    from patchsim.errors import ConfigError

    run = Path(run_dir)
    ref = load_patch(run)
    if scenario is None:
        cfg_path = run / "config.yaml"
        cfg = read_yaml(cfg_path).data
        try:
            scenario = cfg["heldout"]["scenario"]
        except (KeyError, TypeError) as exc:
            raise ConfigError("the attack's config has no heldout.scenario; pass --scenario", cfg_path) from exc
    lanekeeper = ref.victim if ref.slot_kind == "road" else None
    detector = ref.victim if ref.slot_kind == "sign_face" else "detector:default"
    return run_scenario(scenario, out_dir if out_dir is not None else run / "validation", [str(run)], seeds,
                        workers=workers, detector=detector, lanekeeper=lanekeeper, videos=videos, progress=progress)
