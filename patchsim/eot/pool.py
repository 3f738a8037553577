"""Background reuse: clean frames rendered through the camera once and shared by several optimizer steps.

Rendering the whole frame (or crop window) through the camera model costs about as much per step
as the patch itself; the patch only changes a window around the slot. A :class:`BackgroundPool`
draws ``pool_size`` samples (scene, window, light, haze, blur, noise, compression), renders their
clean frames once without autograd, and serves them for ``pool_size * reuse / batch`` steps. Each
step picks ``batch`` of them and draws fresh placement, print error and occluder for them, so the
patch still meets new conditions every step; only the camera conditions repeat, about ``reuse``
times each.

The crop window of a pooled sample was drawn around the slot's corners before the fresh
placement jitter, so a slot near a window edge can now and then reach a few pixels past it (the
detector then sees a sign cut by the window edge, as it would with that crop).

Everything is drawn from generators seeded with (seed, block) and (seed, step), so a resumed run
sees the same samples as an uninterrupted one. With ``reuse: 1`` no pool is made.

Each step's frames are copied into one buffer, which the next draw overwrites: a step must be done
with its images (its backward run) before the next is drawn. A background drawn earlier then refuses
to render.
"""

from __future__ import annotations

import torch

from patchsim.eot.pipeline import EOT, Background
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import select


class BackgroundPool:
    """Serves (params, background) for optimizer steps.

    Args:
        eot: the EOT pipeline. bank: the training scene bank.
        size: samples in the pool. reuse: how many times each is used on average (>= 1).
        batch: samples per step. seed: the run's seed.
    """

    def __init__(self, eot: EOT, bank: SceneBank, size: int, reuse: float, batch: int, seed: int,
                 device: str | torch.device = "cpu"):
        if size < batch:
            raise ValueError(f"a background pool of {size} samples cannot fill batches of {batch}")
        self.eot, self.bank, self.size, self.batch, self.seed, self.device = eot, bank, size, batch, seed, device
        self.steps_per_pool = max(1, round(size * reuse / batch))
        self._block = -1
        self._params: dict | None = None
        self._background: Background | None = None
        self._served: Background | None = None  # the last step's, whose frames are in the buffer

    @classmethod
    def for_steps(cls, eot: EOT, bank: SceneBank, batch: int, seed: int,
                  device: str | torch.device = "cpu") -> BackgroundPool | None:
        """The pool ``eot``'s config asks for (``background_reuse``, ``background_pool``, at least one batch),
        or None when backgrounds are not reused."""
        if eot.cfg.background_reuse <= 1:
            return None
        return cls(eot, bank, max(eot.cfg.background_pool, batch), eot.cfg.background_reuse, batch, seed, device)

    def draw(self, step: int, gen: torch.Generator) -> tuple[dict, Background]:
        """The params and clean background of step ``step``'s batch; ``gen`` draws which and the slot's conditions."""
        block = step // self.steps_per_pool
        if block != self._block:
            pool_gen = torch.Generator().manual_seed(self.seed * 1_000_003 + 7_919 * block + 104_729)
            self._params = self.eot.sample(self.bank, self.size, pool_gen)
            self._background = self.eot.background(self._params, self.bank, self.device)
            self._block = block
        index = torch.randperm(self.size, generator=gen)[:self.batch]
        params = self.eot.resample_patch(select(self._params, index), self.bank, gen)
        # the frames go into the last step's buffer (memory already mapped): the step before must be done with
        # its images (its backward run); rendering with its background now raises
        buffer = None
        if self._served is not None:
            self._served.expired = True
            buffer = self._served.images.detach()
        self._served = self._background.select(index, out=buffer)
        return params, self._served
