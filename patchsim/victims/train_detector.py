"""Train the default detector with the Ultralytics trainer, offline, on simulator data.

The model is YOLOv8 at depth 0.33 and width 0.125 (half the width of YOLOv8n, 0.9 M
parameters): small enough to train on a laptop CPU in under an hour and to attack quickly.
Training runs on square crops at native pixel scale (see :mod:`patchsim.data.generate`), so
signs keep the size they have on the road while each step costs a quarter of a full frame.
Horizontal flips are off: mirrored lettering is not a real sign.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from patchsim.config import check_device, param, to_dict
from patchsim.runs import manifest, write_json, write_text

MODEL_WIDTH = 0.125
MODEL_DEPTH = 0.33


@dataclass
class DetectorTrainConfig:
    data: str = param("runs/data/detector/data.yaml", help="data.yaml written by `patchsim data generate`")
    epochs: int = param(25, range=(1, 1000), help="training epochs")
    imgsz: int = param(320, range=(64, 4096), help="training image size (the crops' side)")
    batch: int = param(32, range=(1, 1024), help="batch size")
    width: float = param(MODEL_WIDTH, range=(0.0625, 1.25), help="YOLOv8 width multiple")
    depth: float = param(MODEL_DEPTH, range=(0.33, 1.0), help="YOLOv8 depth multiple")
    seed: int = param(0, range=(0, 2**31 - 1), help="training seed")
    workers: int = param(2, range=(0, 64), help="data loader processes")
    device: str = param("cpu", help="cpu, cuda or cuda:N")
    time_h: float | None = param(None, unit="h", range=(0.01, 100.0), help="stop after this many hours")
    inference_imgsz: int | None = param(None, range=(64, 4096), help="long side at inference; None = frame size")
    resume: bool = param(True, help="continue an interrupted run found in the output directory")

    def __post_init__(self) -> None:
        check_device(self.device)


#: Ultralytics augmentations for sign data: no horizontal flips (mirrored lettering is not a real sign)
AUGMENT = dict(fliplr=0.0, scale=0.3, translate=0.1, mosaic=1.0)


def read_data_yaml(path: str | Path) -> dict:
    """A detector data set's YAML with its ``path`` made absolute: Ultralytics resolves a relative dataset
    path against the working directory, so it is pinned to the data set."""
    data_path = Path(path).resolve()
    if not data_path.is_file():
        raise FileNotFoundError(f"{data_path}: data.yaml not found (make it with `patchsim data generate`)")
    data = yaml.safe_load(data_path.read_text())
    if isinstance(data, dict):
        data["path"] = str((data_path.parent / data.get("path", ".")).resolve())
    return data


def results_metrics(results_csv: Path) -> dict[str, float]:
    """The last epoch's validation metrics of an Ultralytics run (``metrics/mAP50(B)``, ...)."""
    if not results_csv.is_file():
        return {}
    rows = [r.split(",") for r in results_csv.read_text().strip().splitlines()]
    head = [h.strip() for h in rows[0]]
    last = dict(zip(head, (v.strip() for v in rows[-1])))
    return {k: float(v) for k, v in last.items() if k.startswith("metrics/")}


def model_yaml(nc: int, names: list[str], width: float = MODEL_WIDTH, depth: float = MODEL_DEPTH) -> dict:
    """The YOLOv8 architecture with one custom scale."""
    from patchsim.victims.offline import ultralytics

    ultralytics()
    from ultralytics.utils import ROOT

    cfg = yaml.safe_load((ROOT / "cfg" / "models" / "v8" / "yolov8.yaml").read_text())
    cfg = copy.deepcopy(cfg)
    cfg["nc"] = nc
    cfg["scales"] = {"n": [depth, width, 1024]}
    cfg["scale"] = "n"
    return cfg


def _patch_trainer() -> None:
    """Two Ultralytics defaults that do not suit patchsim.

    - Its AMP check downloads a model on CUDA: patchsim trusts AMP on CUDA instead.
    - On the CPU it sets torch to ``cpu_count - 1`` threads, one thread on a 2-core machine: use all cores.
    """
    import os

    import ultralytics.engine.trainer as trainer_mod
    import ultralytics.utils.torch_utils as torch_utils

    trainer_mod.check_amp = lambda model: True  # type: ignore[assignment]
    torch_utils.NUM_THREADS = os.cpu_count() or 1


@lru_cache(maxsize=1)
def detection_trainer_class() -> type:
    """Ultralytics' ``DetectionTrainer`` with patchsim's settings (offline, :func:`_patch_trainer`).

    The settings are applied where the class is made, so they hold also in a DDP worker: Ultralytics'
    multi-GPU launch file unpickles the trainer class in fresh processes, which find it here by name
    (the module's ``__getattr__``) and never run the code that started the training.
    """
    from patchsim.victims.offline import ultralytics

    ultralytics()
    _patch_trainer()
    from ultralytics.models.yolo.detect import DetectionTrainer

    return type("PatchsimDetectionTrainer", (DetectionTrainer,),
                {"__module__": __name__, "__doc__": "Ultralytics' DetectionTrainer with patchsim's settings."})


def __getattr__(name: str):
    # made on first use: importing Ultralytics is slow and must follow patchsim's offline settings
    if name == "PatchsimDetectionTrainer":
        return detection_trainer_class()
    raise AttributeError(name)


def _finished(results_csv: Path, epochs: int) -> bool:
    """Whether an Ultralytics run logged its last epoch (a finished run cannot be resumed)."""
    if not results_csv.is_file():
        return False
    return len(results_csv.read_text().strip().splitlines()) - 1 >= epochs


def train_detector(cfg: DetectorTrainConfig, out_dir: str | Path) -> dict:
    """Train and write ``OUT/detector.pt`` (patchsim format), the Ultralytics run, and ``train.json``."""
    from patchsim.victims.offline import ultralytics

    ultralytics()
    from ultralytics import YOLO

    from patchsim.victims.detector import save_detector_checkpoint

    out = Path(out_dir).resolve()
    data = read_data_yaml(cfg.data)
    out.mkdir(parents=True, exist_ok=True)
    names = [data["names"][i] for i in sorted(data["names"])]
    resolved_data = out / "data.yaml"
    write_text(resolved_data, yaml.safe_dump(data, sort_keys=False))
    arch = out / "model.yaml"
    write_text(arch, yaml.safe_dump(model_yaml(len(names), names, cfg.width, cfg.depth), sort_keys=False))
    trainer = detection_trainer_class()
    model = YOLO(str(arch), task="detect")
    t0 = time.perf_counter()
    args = dict(
        data=str(resolved_data), epochs=cfg.epochs, imgsz=cfg.imgsz, batch=cfg.batch, device=cfg.device,
        workers=cfg.workers, seed=cfg.seed, deterministic=True, project=str(out), name="ultralytics", exist_ok=True,
        pretrained=False, amp=cfg.device != "cpu", plots=False, val=True, cache="ram",
        close_mosaic=max(1, cfg.epochs // 5), patience=1000, verbose=False,
        optimizer="AdamW", lr0=0.002, cos_lr=True, warmup_epochs=1.0, **AUGMENT,
    )
    if cfg.time_h:
        args["time"] = cfg.time_h
    last = out / "ultralytics" / "weights" / "last.pt"
    if cfg.resume and last.is_file() and not _finished(out / "ultralytics" / "results.csv", cfg.epochs):
        # Ultralytics restores model, optimiser, EMA and epoch from its own checkpoint
        YOLO(str(last)).train(trainer=trainer, resume=True, workers=cfg.workers)
    else:
        model.train(trainer=trainer, **args)
    seconds = time.perf_counter() - t0
    best = out / "ultralytics" / "weights" / "best.pt"
    trained = YOLO(str(best))
    metrics = results_metrics(out / "ultralytics" / "results.csv")
    ckpt = save_detector_checkpoint(out / "detector.pt", trained.model, dict(enumerate(names)), {
        "imgsz": cfg.inference_imgsz, "train_imgsz": cfg.imgsz, "train_config": to_dict(cfg),
        "val_metrics": metrics, "train_seconds": round(seconds, 1),
    })
    summary = {"checkpoint": str(ckpt), "train_seconds": round(seconds, 1), "val_metrics": metrics}
    write_json(out / "train.json", manifest("victims train-detector", cfg.seed, to_dict(cfg), **summary))
    return summary
