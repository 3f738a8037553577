"""The attacker network: a patch generator trained against the current model inside the hardening loop.

Raj, Bresler and Li (ICML 2020) train the model against a generator network instead of a full
optimization per example: once trained, the generator turns noise into a fresh patch in a fraction
of a millisecond, so every training image gets its own. Here the generator is trained on the same
EOT distribution and goal loss as the optimizer (:mod:`patchsim.attack.goals`), with random sticker
layouts (or the whole face), and a mode-seeking term (Mao et al., CVPR 2019) keeps its patches from
collapsing into one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from patchsim.attack.patch import total_variation
from patchsim.config import param
from patchsim.runs import atomic_path

GENERATOR_FORMAT = "patchsim-patch-generator/1"


@dataclass
class AttackerConfig:
    steps: int = param(200, range=(0, 100000), help="generator training steps per round (0: no attacker network)")
    batch: int = param(8, range=(2, 1024), help="EOT samples per step, each with its own patch")
    lr: float = param(0.002, range=(1e-6, 1.0), help="Adam learning rate")
    z_dim: int = param(32, range=(2, 1024), help="noise dimensions")
    width: int = param(32, range=(4, 512), help="channels of the generator's last block")
    tv_weight: float = param(2.5, range=(0.0, 1000.0), help="total variation weight (printable smoothness)")
    diversity_weight: float = param(0.05, range=(0.0, 100.0), help="mode-seeking term against collapsed patches")
    full_face_share: float = param(0.25, range=(0.0, 1.0), help="share of patches that cover the whole face")
    stickers: tuple[int, int] = param((2, 8), range=(1, 8), help="sticker pieces per layout (fewest, most)")
    sticker_side_m: tuple[float, float] = param((0.06, 0.25), unit="m", range=(0.05, 2.0),
                                                help="sticker side length range")
    max_coverage: float = param(0.25, range=(0.01, 1.0), help="largest share of the face a sticker layout covers")
    eval_patches: int = param(8, range=(1, 1000), help="generated patches scored on held-out samples")

    def __post_init__(self) -> None:
        from patchsim.config import FieldError

        if self.stickers[0] > self.stickers[1]:
            raise FieldError("attacker.stickers", f"stickers is (fewest, most), got {list(self.stickers)}")
        if self.sticker_side_m[0] > self.sticker_side_m[1]:
            raise FieldError("attacker.sticker_side_m", f"sticker_side_m is (shortest, longest), "
                                                        f"got {list(self.sticker_side_m)}")


class PatchGenerator(torch.nn.Module):
    """Noise (B, z_dim) -> patch colours (B, 3, H, W) in [0, 1].

    A linear layer to a 6 x 6 map, three upsampling convolution blocks (to 48 x 48) and a
    bilinear resize to the slot's resolution ``hw``.

    Example:
        >>> g = PatchGenerator(hw=(96, 96))
        >>> g(torch.randn(4, 32)).shape
        torch.Size([4, 3, 96, 96])
    """

    def __init__(self, z_dim: int = 32, hw: tuple[int, int] = (96, 96), width: int = 32):
        super().__init__()
        self.z_dim, self.hw, self.width = z_dim, tuple(hw), width
        c = 4 * width
        self.fc = torch.nn.Linear(z_dim, c * 36)
        blocks = []
        for cin, cout in ((c, 2 * width), (2 * width, width), (width, width)):
            blocks += [torch.nn.Upsample(scale_factor=2, mode="nearest"), torch.nn.Conv2d(cin, cout, 3, padding=1),
                       torch.nn.BatchNorm2d(cout), torch.nn.LeakyReLU(0.2)]
        self.blocks = torch.nn.Sequential(*blocks)
        self.head = torch.nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"generator input must be (B, {self.z_dim}), got {tuple(z.shape)}")
        x = self.fc(z).view(z.shape[0], 4 * self.width, 6, 6)
        x = torch.sigmoid(self.head(self.blocks(x)))
        return F.interpolate(x, size=self.hw, mode="bilinear", align_corners=False)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3, H, W) patches from fresh noise (evaluation mode)."""
        was = self.training
        self.eval()
        z = torch.randn(n, self.z_dim, generator=generator).to(next(self.parameters()).device)
        out = self(z)
        self.train(was)
        return out

    def save(self, path: str | Path, meta: dict) -> Path:
        """Plain tensors and data (loadable with ``torch.load(weights_only=True)``)."""
        with atomic_path(path) as tmp:
            torch.save({"format": GENERATOR_FORMAT, "z_dim": self.z_dim, "hw": list(self.hw), "width": self.width,
                        "state_dict": {k: v.detach().cpu() for k, v in self.state_dict().items()}, "meta": meta}, tmp)
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> tuple["PatchGenerator", dict]:
        from patchsim.errors import CheckpointError

        try:
            ck = torch.load(path, map_location="cpu", weights_only=True)
            g = cls(ck["z_dim"], tuple(ck["hw"]), ck["width"])
            g.load_state_dict(ck["state_dict"])
        except Exception as exc:
            raise CheckpointError(f"{path}: not a patch generator checkpoint ({type(exc).__name__}: {exc})") from exc
        return g.eval(), ck.get("meta", {})


def random_masks(outline: torch.Tensor, size_m: tuple[float, float], n: int, cfg: AttackerConfig,
                 gen: torch.Generator) -> torch.Tensor:
    """(n, 1, H, W) masks inside ``outline`` (1, H, W): the whole face for ``full_face_share`` of them,
    otherwise ``cfg.stickers`` rectangles of ``cfg.sticker_side_m`` sides, dropped one by one (the
    largest first) until at most ``cfg.max_coverage`` of the face is covered."""
    _, h, w = outline.shape
    ppm = (w / size_m[0], h / size_m[1])
    area = float(outline.sum())
    out = torch.zeros(n, 1, h, w, device=outline.device)
    for i in range(n):
        if float(torch.rand((), generator=gen)) < cfg.full_face_share:
            out[i] = outline
            continue
        k = int(torch.randint(cfg.stickers[0], cfg.stickers[1] + 1, (), generator=gen))
        lo, hi = cfg.sticker_side_m
        rects = []
        for _ in range(k):
            sw, sh = (lo + (hi - lo) * torch.rand(2, generator=gen)).tolist()
            x, y = torch.rand(2, generator=gen).tolist()
            pw, ph = min(w, max(1, int(sw * ppm[0]))), min(h, max(1, int(sh * ppm[1])))
            rects.append((pw * ph, int(x * (w - pw)), int(y * (h - ph)), pw, ph))
        rects.sort(reverse=True)
        while rects:
            m = torch.zeros(1, h, w, device=outline.device)
            for _, x0, y0, pw, ph in rects:
                m[:, y0:y0 + ph, x0:x0 + pw] = 1.0
            m = m * outline
            if float(m.sum()) <= cfg.max_coverage * area:
                break
            rects.pop(0)
        out[i] = m
    return out


def _diversity(patches: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """Mode-seeking ratio: mean patch distance over mean noise distance of shuffled pairs."""
    perm = torch.roll(torch.arange(z.shape[0], device=z.device), 1)
    return (patches - patches[perm]).abs().mean() / ((z - z[perm]).abs().mean() + 1e-8)


def train_attacker(cfg: AttackerConfig, victim, eot, bank, goal, outline: torch.Tensor, size_m: tuple[float, float],
                   seed: int, device: str = "cpu", init: PatchGenerator | None = None,
                   progress: bool = False, time_budget_s: float | None = None) -> tuple[PatchGenerator, dict]:
    """Train a generator against ``victim`` for ``cfg.steps`` steps (or go on from ``init``), or until
    ``time_budget_s`` has passed.

    Args:
        eot, bank: the EOT pipeline and scene bank the optimizer attacks on.
        goal: the attack goal (its loss is minimized).
        outline: (1, H, W) the slot's outline at patch resolution; its size is the patches' size.

    Returns:
        The generator (evaluation mode) and its training figures (``train_s``, the last losses).
    """
    from tqdm import tqdm

    from patchsim.eot.pool import BackgroundPool

    torch.manual_seed(seed)
    hw = tuple(outline.shape[-2:])
    g = init if init is not None else PatchGenerator(cfg.z_dim, hw, cfg.width)
    g = g.to(device).train()
    opt = torch.optim.Adam(g.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    pool = BackgroundPool.for_steps(eot, bank, cfg.batch, seed, device)
    history = []
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="attacker network", disable=not progress, leave=False):
        if pool is not None:
            params, background = pool.draw(step, hw)
        else:
            params, background = eot.sample(bank, cfg.batch, gen), None
        z = torch.randn(cfg.batch, cfg.z_dim, generator=gen).to(device)
        patches = g(z)
        masks = random_masks(outline.to(device), size_m, cfg.batch, cfg, gen)
        batch = eot.render(patches, masks, params, bank, device=device, background=background)
        attack = goal.loss(victim, batch).float().mean()
        tv = torch.stack([total_variation(p, m) for p, m in zip(patches, masks)]).mean()
        div = _diversity(patches, z)
        loss = attack + cfg.tv_weight * tv - cfg.diversity_weight * torch.clamp(div, max=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append({"step": step + 1, "attack": round(attack.item(), 5), "diversity": round(div.item(), 4)})
        if time_budget_s is not None and time.perf_counter() - t0 >= time_budget_s:
            break
    train_s = time.perf_counter() - t0
    last = history[-10:]
    stats = {"steps": len(history), "train_s": round(train_s, 1),
             "final_attack_loss": round(float(np.mean([h["attack"] for h in last])), 5) if last else None,
             "final_diversity": round(float(np.mean([h["diversity"] for h in last])), 4) if last else None}
    return g.eval(), stats


@torch.no_grad()
def score_attacker(g: PatchGenerator, cfg: AttackerConfig, victim, eot, bank, params: dict, goal,
                   outline: torch.Tensor, size_m: tuple[float, float], seed: int, device: str = "cpu") -> dict:
    """Held-out success of ``cfg.eval_patches`` generated patches (each with a random layout) on the
    samples ``params``, and how many patches the generator makes per second."""
    from patchsim.attack.evaluate import evaluate_heldout

    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    patches = g.sample(cfg.eval_patches, gen).to(device)
    gen_s = time.perf_counter() - t0
    masks = random_masks(outline.to(device), size_m, cfg.eval_patches, cfg, gen)
    rates, cache = [], {}
    for p, m in zip(patches, masks):
        res = evaluate_heldout(victim, eot, bank, params, p, m, goal, device=device, clean_cache=cache)
        rates.append(res.success_rate)
    t1 = time.perf_counter()
    for _ in range(3):
        g.sample(64, gen)
    per_s = 3 * 64 / max(time.perf_counter() - t1, 1e-9)
    return {"heldout_success_rate": round(float(np.mean(rates)), 4),
            "heldout_success_rates": [round(r, 4) for r in rates],
            "patches_per_s": round(per_s, 1), "first_patches_s": round(gen_s, 4)}


def train_against(cfg: AttackerConfig, acfg, init: PatchGenerator | None = None,
                  progress: bool = False) -> tuple[PatchGenerator, object, dict, dict]:
    """Train a generator against the victim of the attack config ``acfg``, on its training scenes, EOT and
    goal (seeded by its seed, on its device), and score it on ``acfg.eval_samples`` of its held-out scenes.

    Returns:
        The generator, the slot it makes patches for (``SlotInfo``), its training figures and its score
        (:func:`score_attacker`).
    """
    from patchsim.attack.banks import scene_banks
    from patchsim.attack.objective import load_attack_victim
    from patchsim.attack.patch import Patch, SlotInfo
    from patchsim.eot.pipeline import EOT
    from patchsim.eot.printer import load_profile

    victim = load_attack_victim(acfg)
    bank, heldout_bank, _ = scene_banks(acfg)
    # the network's patches are scored frame by frame: its batches are not drawn as drives
    eot = EOT(replace(acfg.eot, drive_frames=1), load_profile(acfg.printer_profile))
    slot = SlotInfo(acfg.scenes.slot, bank.slot_kind, bank.slot_size_m, bank.sign_kind)
    outline = Patch(slot, acfg.patch).outline
    g, stats = train_attacker(cfg, victim, eot, bank, acfg.make_goal(), outline, slot.size_m, seed=acfg.seed,
                              device=acfg.device, init=init, progress=progress)
    params = eot.sample(heldout_bank, acfg.eval_samples, torch.Generator().manual_seed(acfg.seed + 99_991),
                        full_frame=True)
    score = score_attacker(g, cfg, victim, eot, heldout_bank, params, acfg.make_goal(), outline, slot.size_m,
                           seed=acfg.seed, device=acfg.device)
    return g, slot, stats, score


def generated_rgba(g: PatchGenerator, cfg: AttackerConfig, outline: torch.Tensor, size_m: tuple[float, float],
                   n: int, gen: torch.Generator, printed=None) -> np.ndarray:
    """(n, H, W, 4) float32 patches with random layouts as alpha, for pasting on training images;
    ``printed`` maps (n, 3, H, W) colours to their printed look."""
    return layout_rgba(g.sample(n, gen).cpu(), cfg, outline, size_m, gen, printed)


def layout_rgba(colours: torch.Tensor, cfg: AttackerConfig, outline: torch.Tensor, size_m: tuple[float, float],
                gen: torch.Generator, printed=None) -> np.ndarray:
    """(n, H, W, 4) float32: ``colours`` (n, 3, H, W), as printed, with random sticker layouts
    (:func:`random_masks`) as alpha."""
    with torch.no_grad():
        if printed is not None:
            colours = printed(colours)
        masks = random_masks(outline.cpu(), size_m, colours.shape[0], cfg, gen)
    return torch.cat([colours, masks], 1).permute(0, 2, 3, 1).numpy().astype(np.float32)
