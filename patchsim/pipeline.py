"""The main job: make a patch, test it in closed loop under held-out conditions, write the printable PDF."""

from __future__ import annotations

import shutil
from pathlib import Path

from patchsim.runs import manifest, output_dir, write_json

SWEEPS_DIR = Path("scenarios") / "sweeps"
#: The held-out sweep for each kind of patch slot.
HELDOUT_SWEEPS = {"sign_face": "stop_sign_heldout.yaml", "road": "lane_keep_straight_heldout.yaml"}


def run_pipeline(out_dir: str | Path, attack_config: str | Path | None = None, heldout_seeds: int = 10,
                 workers: int = 2, printables_dir: str | Path = "printables", paper: str = "A4",
                 sweep: str | Path | None = None, progress: bool = True) -> dict:
    """Attack (the shipped default unless ``attack_config``), sweep held-out conditions in closed loop, print.

    Writes ``OUT/attack/`` (the attack run), ``OUT/heldout/`` (the closed-loop sweep: clean vs
    patched over ``heldout_seeds`` held-out conditions, ``report.html``), ``printables/<name>.pdf``
    (and a copy in ``OUT``), and ``OUT/summary.json``. A killed pipeline resumes where it stopped.
    """
    from patchsim.attack.config import load_attack_config
    from patchsim.attack.optimizer import run_attack
    from patchsim.closedloop.patches import load_patch
    from patchsim.closedloop.sweep import load_sweep, run_sweep
    from patchsim.printing import export_pdf
    from patchsim.printing.layout import paper_size_mm

    # every input checked before the attack starts
    cfg = load_attack_config(attack_config)
    paper_size_mm(paper)
    if sweep is not None:
        load_sweep(sweep)
    out = Path(out_dir)
    with output_dir(out, keep=("attack",)):  # a failure leaves nothing behind, except a resumable attack
        attack_dir = out / "attack"
        resume = (attack_dir / "checkpoint.pt").is_file()
        attack = run_attack(cfg, attack_dir, resume=resume, progress=progress)
        kind = load_patch(attack_dir).slot_kind
        sweep_file = Path(sweep) if sweep is not None else SWEEPS_DIR / HELDOUT_SWEEPS[kind]
        heldout = run_sweep(sweep_file, out / "heldout", workers=workers, patches=[str(attack_dir)],
                            progress=progress, samples=heldout_seeds)
        pdf = Path(printables_dir) / f"{cfg.name}.pdf"
        export_pdf(attack_dir, pdf, paper=paper)
        shutil.copyfile(pdf, out / pdf.name)
        summary = {"attack": attack.metrics, "heldout": heldout, "printable": str(pdf),
                   "attack_dir": str(attack_dir)}
        write_json(out / "summary.json", {**summary, "run": manifest("pipeline", cfg.seed, None)})
    return summary
