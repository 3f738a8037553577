"""Background reuse: clean frames rendered through the camera once and shared by several optimizer steps.

Rendering the whole frame (or crop window) through the camera model costs about as much per step
as the patch itself; the patch only changes a window around the slot. A :class:`BackgroundPool`
draws ``pool_size`` samples (scene, window, light, haze, blur, noise, compression), renders their
clean frames once without autograd, and serves them for ``pool_size * reuse / batch`` steps. Each
step takes one group of ``batch`` of them and fresh placement, print error and occluder for them, so
the patch still meets new conditions every step; only the camera conditions repeat, about ``reuse``
times each.

The pool is cut into fixed groups of ``batch`` samples of similar slot size in the image (the pool
sorted by it; samples drawn in drives, ``drive_frames`` > 1, are sorted as whole drives): a batch's
window around its slots is as large as its largest slot needs, so groups of like sizes make smaller
windows; and a group's frames are a slice of the pool's, served without a
copy. A render writes its patch into them and keeps the clean pixels it overwrote; the next draw puts
them back. The groups take turns in a seeded order, each as often as the others (give or take one).

The fresh slot conditions of all the pool's steps are drawn at once when the pool is made, and their
geometry (homographies, windows, outline boxes, occluders: :class:`~patchsim.eot.pipeline.Layout`) is
worked out for all steps in one batched pass.

The crop window of a pooled sample was drawn around the slot's corners before the fresh
placement jitter, so a slot near a window edge can now and then reach a few pixels past it (the
detector then sees a sign cut by the window edge, as it would with that crop).

Everything is drawn from a generator seeded with (seed, pool number), so a resumed run sees the same
samples as an uninterrupted one. With ``reuse: 1`` no pool is made.

A step must be done with its images (its backward run) before the next is drawn; a background drawn
earlier then refuses to render.
"""

from __future__ import annotations

import torch

from patchsim.eot.pipeline import EOT, Background, Layout
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import select

#: how a pool draws its samples; a checkpoint records it, and a run resumes only under the same scheme
#: (1: each step drew a random batch of the pool and its slot conditions from the step's generator;
#: 2: groups of like slot size, every step drawn from the pool's generator)
SAMPLING_SCHEME = 2


def _rows(params: dict, start: int, stop: int) -> dict:
    """The params of samples ``start .. stop - 1`` (views)."""
    return {k: _rows(v, start, stop) if isinstance(v, dict) else v[start:stop] for k, v in params.items()}


class BackgroundPool:
    """Serves (params, background) for optimizer steps.

    Args:
        eot: the EOT pipeline. bank: the training scene bank.
        size: samples in the pool (rounded down to whole batches). reuse: how many times each is used on
            average (>= 1). batch: samples per step. seed: the run's seed.
    """

    def __init__(self, eot: EOT, bank: SceneBank, size: int, reuse: float, batch: int, seed: int,
                 device: str | torch.device = "cpu"):
        if size < batch:
            raise ValueError(f"a background pool of {size} samples cannot fill batches of {batch}")
        size = size // batch * batch
        self.eot, self.bank, self.size, self.batch, self.seed, self.device = eot, bank, size, batch, seed, device
        self.steps_per_pool = max(1, round(size * reuse / batch))
        self._block = -1
        self._params: dict | None = None  # the pool's samples, sorted by slot size
        self._background: Background | None = None
        self._groups: list[int] = []  # which group each step of the pool takes
        self._steps: dict | None = None  # each step's params, fresh slot conditions included (steps x batch)
        self._layout: Layout | None = None  # their geometry
        self._served: Background | None = None  # the last step's

    @classmethod
    def for_steps(cls, eot: EOT, bank: SceneBank, batch: int, seed: int,
                  device: str | torch.device = "cpu") -> BackgroundPool | None:
        """The pool ``eot``'s config asks for (``background_reuse``, ``background_pool``, at least one batch),
        or None when backgrounds are not reused."""
        if eot.cfg.background_reuse <= 1:
            return None
        return cls(eot, bank, max(eot.cfg.background_pool, batch), eot.cfg.background_reuse, batch, seed, device)

    def draw(self, step: int, slot_hw: tuple[int, int] | None = None) -> tuple[dict, Background]:
        """The params and clean background of step ``step``'s batch; with ``slot_hw`` (the patch's (h, w)), the
        background carries the slot's geometry for it."""
        if self._served is not None:  # the last step is done with its frames: make them clean again
            self._served.restore()
            self._served.expired = True
        block, k = divmod(step, self.steps_per_pool)
        if block != self._block:
            self._start(block)
        if slot_hw is not None and (self._layout is None or self._layout.slot_hw != tuple(slot_hw)):
            self._layout = self.eot.layout(self._steps, self.bank, tuple(slot_hw), self.device, batch=self.batch)
        g = self._groups[k]
        params = _rows(self._steps, k * self.batch, (k + 1) * self.batch)
        layout = self._layout.part(k) if slot_hw is not None else None
        self._served = self._background.rows(g * self.batch, (g + 1) * self.batch, layout)
        return params, self._served

    def _start(self, block: int) -> None:
        """Draw and render pool number ``block``: its samples, the order its groups take turns in, and every
        step's fresh slot conditions."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * block + 104_729)
        params = self.eot.sample(self.bank, self.size, gen)
        q = params["placement"]["corners"]
        extent = (q.max(1).values - q.min(1).values).prod(-1)  # (N,) the slot's box area in the image
        k = self.eot.cfg.drive_frames  # drives stay whole, sorted by their largest view of the slot (k = 1: frames)
        order = torch.sort(extent.view(-1, k).amax(1), stable=True).indices
        self._params = select(params, (order[:, None] * k + torch.arange(k)).flatten())
        self._background = self.eot.background(self._params, self.bank, self.device)
        groups = self.size // self.batch
        order = torch.cat([torch.randperm(groups, generator=gen)
                           for _ in range(-(-self.steps_per_pool // groups))])
        self._groups = order[:self.steps_per_pool].tolist()
        # the pool's samples as each step takes them, with fresh slot conditions
        index = torch.cat([torch.arange(g * self.batch, (g + 1) * self.batch) for g in self._groups])
        self._steps = self.eot.resample_patch(select(self._params, index), self.bank, gen)
        self._layout = None
        self._block = block
