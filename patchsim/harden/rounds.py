"""What the hardening loops share: a round's attacks on the current model, the state file of finished
rounds, and the plot of attack success by round."""

from __future__ import annotations

from pathlib import Path

from patchsim.config import from_dict, read_json, to_dict
from patchsim.errors import CheckpointError


def attack_config_for(name: str, victim: str, seed: int, **overrides):
    """Attack ``name`` (a shipped name or a file) aimed at ``victim`` with ``overrides``, checked like a YAML
    file; every step it is given (no plateau stop: an adaptive attack gets its whole budget) and no
    closed-loop drives (the hardening and its evaluation drive separately)."""
    from patchsim.attack.config import AttackConfig, load_attack_config

    base = load_attack_config(name)
    fixed = {"victim": str(victim), "seed": seed, "closed_loop_seeds": 0, "closed_loop_candidates": 1,
             "plateau_evals": None}
    return from_dict(AttackConfig, {**to_dict(base), **fixed, **overrides}, f"{name} (hardening)")


def check_attacks(made: list[tuple[str, object]], victim_kind: str) -> dict[str, tuple[str, object]]:
    """Attack configs (each with the name or file it was given as) that fit the kind of model at stake and
    each have a name of their own (their run folders, report keys): name -> (as given, config).

    Raises:
        FieldError: naming ``attacks`` and the attack.
    """
    from patchsim.config import FieldError

    named: dict[str, tuple[str, object]] = {}
    for given, acfg in made:
        if acfg.victim_kind != victim_kind:
            kind = "lane-keeper" if victim_kind == "lanekeeper" else "detector"
            raise FieldError("attacks", f"attack {given!r} is not a {kind} attack (goal {acfg.goal!r})")
        if acfg.name in named:
            raise FieldError("attacks", f"two attacks are named {acfg.name!r} (their runs would share a folder); "
                                        f"give each its own name")
        named[acfg.name] = (given, acfg)
    return named


def check_round_attacks(attacks: list, baseline: str, seed: int, victim_kind: str) -> None:
    """:func:`check_attacks` for round attacks (``RoundAttack`` items) aimed at ``baseline``."""
    check_attacks([(spec.config, attack_config_for(spec.config, baseline, seed, steps=spec.steps,
                                                   time_budget_s=spec.time_budget_s)) for spec in attacks],
                  victim_kind)


def attack_round(attacks: list, k: int, current: str, seed: int, device: str, folder: Path, pool_dir: Path,
                 progress: bool) -> tuple[list[dict], list[tuple]]:
    """Round ``k``'s attacks (``RoundAttack`` items) on the model ``current``, each with its own seed; a run
    already finished in ``folder`` is read, an interrupted one resumed. Each patch is copied into ``pool_dir``.

    Returns:
        Per attack its figures, and (pool file name, the attack's config, its ``patch.json``).
    """
    import shutil

    from patchsim.attack.optimizer import run_attack

    figures, made = [], []
    for i, spec in enumerate(attacks):
        acfg = attack_config_for(spec.config, current, seed + 1000 * k + i, steps=spec.steps,
                                 time_budget_s=spec.time_budget_s, device=device)
        run = folder / acfg.name
        if not (run / "patch.json").is_file():
            run_attack(acfg, run, resume=(run / "checkpoint.pt").is_file(), progress=progress)
        doc = read_json(run / "patch.json", "attack result")
        m = doc["metrics"]
        figures.append({"attack": acfg.name, "goal": acfg.goal, "heldout_success_rate": m["heldout_success_rate"],
                        **({"mean_steer_change_deg": m["mean_steer_change_deg"]} if "mean_steer_change_deg" in m
                           else {}), "steps": m["steps"], "wall_s": m["wall_s"]})
        name = f"round{k}_{acfg.name}.png"
        shutil.copyfile(run / "patch_rgba.png", pool_dir / name)
        made.append((name, acfg, doc))
    return figures, made


def read_state(path: Path, cfg, fmt: str) -> dict:
    """The finished rounds recorded in ``path`` (a new state when there is none).

    Raises:
        CheckpointError: the state is of another kind, was made with other settings (only ``rounds``
            may change: more rounds go on from the last finished one), or has more rounds than asked.
    """
    if not path.is_file():
        return {"format": fmt, "config": to_dict(cfg), "rounds": [], "pool": [], "elapsed_s": 0.0}
    state = read_json(path, "hardening state")
    if state.get("format") != fmt:
        raise CheckpointError(f"{path}: not a {fmt} state (format {state.get('format')!r})")
    saved, now = dict(state["config"]), to_dict(cfg)
    differ = sorted(k for k in now if k != "rounds" and saved.get(k) != now[k])
    if differ:
        raise CheckpointError(f"{path}: this run was made with other settings ({', '.join(differ)} differ); "
                              f"resume it with its own config, or choose a new --out")
    if len(state["rounds"]) > cfg.rounds:
        raise CheckpointError(f"{path}: already {len(state['rounds'])} rounds, more than rounds: {cfg.rounds}")
    state["config"] = now
    return state


def plot_rounds(path: Path, rounds: list[dict]) -> None:
    """Held-out success of each round's attacks (and attacker network) on the model entering the round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    names = sorted({a["attack"] for r in rounds for a in r["attacks"]})
    xs = [r["round"] for r in rounds]
    for n in names:
        ax.plot(xs, [next((a["heldout_success_rate"] for a in r["attacks"] if a["attack"] == n), None)
                     for r in rounds], marker="o", label=n)
    att = [(r.get("attacker") or {}).get("score", {}).get("heldout_success_rate") for r in rounds]
    if any(a is not None for a in att):
        ax.plot(xs, att, marker="s", linestyle="--", label="attacker network")
    ax.set_xlabel("round (attack on the model entering it)")
    ax.set_ylabel("held-out success")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
