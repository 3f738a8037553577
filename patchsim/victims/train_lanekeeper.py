"""Train the lane-keepers on simulator data.

PilotNet is trained by behaviour cloning: the expert (pure pursuit on the true lane centre)
drives with Gaussian steering noise (DART) from perturbed starts while every frame is labelled
with the expert's own command; then DAgger rounds let the network drive part of the scenes,
still labelled by the expert, and retrain on everything. The lane-marking segmenter of
LaneNetKeeper learns from the label render's marking masks; its controller needs no training.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from patchsim.config import param, to_dict
from patchsim.data.generate import LaneDataConfig, LaneSample, lane_samples
from patchsim.runs import manifest, write_json
from patchsim.victims.lanekeeper import LaneNetKeeper, PilotNet, save_lanekeeper_checkpoint


@dataclass
class LaneTrainConfig:
    seed: int = param(0, range=(0, 2**31 - 1), help="fixes data, initialization and batches")
    data: LaneDataConfig = param(default_factory=LaneDataConfig)
    dagger_rounds: int = param(2, range=(0, 10), help="rounds where PilotNet drives part of the scenes")
    dagger_scenes: int = param(30, range=(1, 10000), help="scenes collected per DAgger round")
    dagger_policy_share: float = param(0.7, range=(0.0, 1.0), help="share of DAgger scenes PilotNet drives")
    pilotnet_epochs: int = param(12, range=(1, 1000), help="epochs on the first data set")
    pilotnet_round_epochs: int = param(6, range=(1, 1000), help="epochs after each DAgger round")
    lanenet_epochs: int = param(8, range=(1, 1000), help="segmenter epochs")
    batch: int = param(64, range=(1, 4096), help="batch size")
    lr: float = param(1e-3, range=(1e-6, 1.0), help="Adam learning rate")
    shadow_probability: float = param(0.5, range=(0.0, 1.0),
                                      help="share of PilotNet training views given a random cast shadow")
    train_pilotnet: bool = param(True, help="train PilotNet")
    train_lanenet: bool = param(True, help="train the LaneNet segmenter")


@dataclass
class LaneBuffers:
    pilot_views: list[torch.Tensor] = field(default_factory=list)  # uint8 (N, 3, 66, 200)
    labels: list[torch.Tensor] = field(default_factory=list)  # float (N,)
    seg_views: list[torch.Tensor] = field(default_factory=list)  # uint8 (N, 3, 96, 320)
    seg_masks: list[torch.Tensor] = field(default_factory=list)  # uint8 (N, 1, 96, 320), 0..255 coverage


def _collect(cfg: LaneDataConfig, pilot: PilotNet, lanenet: LaneNetKeeper, buf: LaneBuffers, policy=None,
             policy_share: float = 0.0, with_masks: bool = True) -> int:
    return collect(lane_samples(cfg, policy=policy, policy_share=policy_share), pilot, lanenet, buf, with_masks)


def collect(samples: Iterable[LaneSample], pilot: PilotNet, lanenet: LaneNetKeeper, buf: LaneBuffers,
            with_masks: bool = True) -> int:
    """Add ``samples`` to ``buf`` as each network's road view (uint8), with the expert's steering and, with
    ``with_masks``, the marking masks; returns how many."""
    frames, masks, labels = [], [], []

    def flush() -> None:
        if not frames:
            return
        x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div(255)
        with torch.no_grad():
            buf.pilot_views.append((pilot.road_view(x, pilot.input_hw) * 255).round().to(torch.uint8))
            if with_masks:
                buf.seg_views.append((lanenet.road_view(x, lanenet.input_hw) * 255).round().to(torch.uint8))
                m = torch.from_numpy(np.stack(masks)).float()[:, None]
                top = int(round(lanenet.camera.road_view_top * m.shape[-2]))
                m = F.interpolate(m[:, :, top:], size=lanenet.input_hw, mode="area")
                buf.seg_masks.append((m * 255).round().to(torch.uint8))
        buf.labels.append(torch.tensor(labels, dtype=torch.float32))
        frames.clear()
        masks.clear()
        labels.clear()

    n = 0
    for s in samples:
        frames.append(s.image)
        masks.append(s.marking_mask)
        labels.append(s.expert_steer)
        n += 1
        if len(frames) == 256:
            flush()
    flush()
    return n


def cast_shadows(x: torch.Tensor, probability: float, gen: torch.Generator) -> torch.Tensor:
    """Darken a random straight-edged region of some views, as a building's or tree line's shadow does.

    x: (B, 3, H, W) in [0, 1]. With ``probability`` a view gets a shadow: the intersection of one or
    two random half-planes (a half-plane, a wedge or a band, so the shadow's edges cross the road at
    any angle like the lane's own edges do), darkened by a factor in [0.3, 0.75] and tinted slightly
    blue (shade is lit by the sky). Views without a shadow keep their values. The random draws come
    from ``gen`` (a CPU generator) whatever device ``x`` is on.
    """
    b, _, h, w = x.shape
    if probability <= 0:
        return x
    ys = torch.linspace(0, 1, h).view(1, h, 1)
    xs = torch.linspace(0, 1, w).view(1, 1, w)
    inside = torch.ones(b, h, w, dtype=torch.bool)
    second = torch.rand(b, generator=gen) < 0.5
    for k in range(2):
        px, py = torch.rand(b, 1, 1, generator=gen), torch.rand(b, 1, 1, generator=gen)
        angle = torch.rand(b, 1, 1, generator=gen) * 2 * torch.pi
        half = (xs - px) * torch.cos(angle) + (ys - py) * torch.sin(angle) > 0
        inside &= half if k == 0 else (half | ~second.view(b, 1, 1))
    on = (torch.rand(b, generator=gen) < probability).view(b, 1, 1, 1)
    dark = 0.3 + 0.45 * torch.rand(b, 1, 1, 1, generator=gen)
    tint = torch.tensor([0.95, 1.0, 1.08]).view(1, 3, 1, 1)
    factor = torch.where(inside[:, None] & on, dark * tint, torch.ones(()))
    return (x * factor.to(x)).clamp(0, 1)


def _augment(x: torch.Tensor, gen: torch.Generator, shadow_probability: float = 0.0) -> torch.Tensor:
    """Cast shadows (optional), brightness, contrast and noise jitter on a batch in [0, 1]."""
    x = cast_shadows(x, shadow_probability, gen)
    b = x.shape[0]
    gain = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.5
    bias = (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.16
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5) * 0.4
    x = (x - mean) * contrast + mean
    x = x * gain + bias + torch.randn(x.shape, generator=gen) * 0.01
    return x.clamp(0, 1)


def _fit(module: torch.nn.Module, n: int, batch: int, epochs: int, lr: float, batch_loss,
         gen: torch.Generator) -> float:
    """Adam with a cosine schedule over ``epochs`` shuffled passes; ``batch_loss(indices)`` gives each loss.

    Returns the mean loss of the last epoch.
    """
    opt = torch.optim.Adam(module.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))
    last = float("nan")
    for _ in range(epochs):
        module.train()
        order = torch.randperm(n, generator=gen)
        total, count = 0.0, 0
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            loss = batch_loss(idx)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
            count += len(idx)
        sched.step()
        last = total / max(count, 1)
    module.eval()
    return last


def fit_pilotnet(model: PilotNet, views: torch.Tensor, labels: torch.Tensor, epochs: int, cfg: LaneTrainConfig,
                  gen: torch.Generator) -> float:
    target_deg = labels * 35.0  # learn in degrees of wheel angle: a better-scaled regression target

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = _augment(views[idx].float() / 255, gen, cfg.shadow_probability)
        pred_deg = model.forward_view((x - 0.5) / 0.25) * 35.0
        return F.smooth_l1_loss(pred_deg, target_deg[idx], beta=0.5)

    return _fit(model, len(views), cfg.batch, epochs, cfg.lr, batch_loss, gen)


def fit_segmenter(model: LaneNetKeeper, views: torch.Tensor, masks: torch.Tensor, cfg: LaneTrainConfig,
                   gen: torch.Generator) -> float:
    pos_weight = torch.tensor(4.0)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        x = _augment(views[idx].float() / 255, gen)
        target = masks[idx].float() / 255
        logits = model.segmenter((x - 0.5) / 0.25)
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=pos_weight)
        prob = torch.sigmoid(logits)
        dice = 1 - (2 * (prob * target).sum() + 1) / (prob.sum() + target.sum() + 1)
        return bce + 0.5 * dice

    return _fit(model.segmenter, len(views), 32, cfg.lanenet_epochs, cfg.lr * 2, batch_loss, gen)


def train_lanekeepers(cfg: LaneTrainConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Train PilotNet (with DAgger) and the LaneNet segmenter; write both checkpoints and ``train.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    pilot, lanenet = PilotNet(), LaneNetKeeper()
    # One generator per network, so training either alone gives the same weights as training both.
    seg_gen = torch.Generator().manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    buf = LaneBuffers()
    t0 = time.perf_counter()
    log: dict = {"rounds": []}
    n0 = _collect(cfg.data, pilot, lanenet, buf, with_masks=cfg.train_lanenet)
    log["frames_initial"] = n0
    if cfg.train_lanenet:
        seg_loss = fit_segmenter(lanenet, torch.cat(buf.seg_views), torch.cat(buf.seg_masks), cfg, seg_gen)
        log["lanenet_final_loss"] = round(seg_loss, 5)
        buf.seg_views.clear()
        buf.seg_masks.clear()
        save_lanekeeper_checkpoint(out / "lanekeeper_lanenet.pt", lanenet, {
            "train_config": to_dict(cfg), "final_loss": seg_loss, "frames": n0})
    if cfg.train_pilotnet:
        torch.manual_seed(cfg.seed + 1)
        loss = fit_pilotnet(pilot, torch.cat(buf.pilot_views), torch.cat(buf.labels), cfg.pilotnet_epochs, cfg, gen)
        log["rounds"].append({"round": 0, "frames": n0, "loss": round(loss, 5)})

        def policy(frame) -> float:
            with torch.no_grad():
                x = torch.from_numpy(frame.image).permute(2, 0, 1)[None].float().div(255)
                return float(pilot(x)[0])

        for r in range(1, cfg.dagger_rounds + 1):
            dcfg = LaneDataConfig(**{**cfg.data.__dict__, "seed": cfg.data.seed + 1000 * r,
                                     "scenes": cfg.dagger_scenes, "steer_noise": cfg.data.steer_noise * 0.5})
            n = _collect(dcfg, pilot, lanenet, buf, policy=policy, policy_share=cfg.dagger_policy_share,
                         with_masks=False)
            loss = fit_pilotnet(pilot, torch.cat(buf.pilot_views), torch.cat(buf.labels), cfg.pilotnet_round_epochs,
                                 cfg, gen)
            log["rounds"].append({"round": r, "frames": n, "loss": round(loss, 5)})
        save_lanekeeper_checkpoint(out / "lanekeeper_pilotnet.pt", pilot, {
            "train_config": to_dict(cfg), "rounds": log["rounds"]})
    log["seconds"] = round(time.perf_counter() - t0, 1)
    write_json(out / "train.json", manifest("victims train-lanekeeper", cfg.seed, to_dict(cfg), **log))
    return log
