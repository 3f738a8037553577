"""The main job: make a patch, validate it in closed loop, write the printable PDF."""

from __future__ import annotations

import shutil
from pathlib import Path

from patchsim.runs import manifest, write_json


def run_pipeline(out_dir: str | Path, attack_config: str | Path | None = None, seeds: int = 2,
                 printables_dir: str | Path = "printables", paper: str = "A4", progress: bool = True) -> dict:
    """Attack (the shipped default unless ``attack_config``), validate, print.

    Writes ``OUT/attack/`` (the attack run), ``OUT/attack/validation/`` (closed-loop results and
    videos), ``printables/<patch id>.pdf`` (and a copy in ``OUT``), and ``OUT/summary.json``.
    """
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.optimizer import run_attack
    from patchsim.printing import export_pdf
    from patchsim.scenario.validate import validate_run

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_attack_config(attack_config)
    attack_dir = out / "attack"
    resume = (attack_dir / "checkpoint.pt").is_file()
    attack = run_attack(cfg, attack_dir, resume=resume, progress=progress)
    validation = validate_run(attack_dir, attack_dir / "validation", seeds=seeds)
    pdf = Path(printables_dir) / f"{cfg.name}.pdf"
    export_pdf(attack_dir, pdf, paper=paper)
    shutil.copyfile(pdf, out / pdf.name)
    summary = {"attack": attack.metrics, "validation": validation["summary"], "printable": str(pdf),
               "attack_dir": str(attack_dir)}
    write_json(out / "summary.json", {**summary, "run": manifest("pipeline", cfg.seed, None)})
    return summary
