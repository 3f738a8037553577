"""The attacker network: shapes, sticker layouts a person could apply, a round trip through its file, and
per-sample patches through the EOT renderer."""

from __future__ import annotations

import pytest
import torch

from patchsim.attack.patch import SlotInfo, raster_polygon
from patchsim.harden.attacker import AttackerConfig, PatchGenerator, random_masks


def _outline(hw=(96, 96)) -> torch.Tensor:
    outline_uv = SlotInfo("f", "sign_face", (0.75, 0.75), "stop_sign").outline_uv()
    return torch.from_numpy(raster_polygon(outline_uv, hw))[None]


def test_the_generator_turns_noise_into_patches_in_range():
    g = PatchGenerator(z_dim=8, hw=(40, 56), width=8)
    out = g(torch.randn(3, 8)).detach()
    assert out.shape == (3, 3, 40, 56) and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError, match=r"\(B, 8\)"):
        g(torch.randn(3, 5))


def test_random_layouts_stay_inside_the_face_and_under_the_coverage_limit():
    cfg = AttackerConfig(full_face_share=0.3, max_coverage=0.25)
    outline = _outline()
    masks = random_masks(outline, (0.75, 0.75), 40, cfg, torch.Generator().manual_seed(0))
    cover = masks.sum((1, 2, 3)) / outline.sum()
    full = cover > 0.99
    assert 3 <= int(full.sum()) <= 25  # about 30 % cover the whole face
    assert float(cover[~full].max()) <= 0.25 + 1e-6 and float(cover[~full].min()) > 0
    assert bool((masks <= outline + 1e-6).all())


def test_a_saved_generator_loads_with_the_same_weights(tmp_path):
    g = PatchGenerator(z_dim=8, hw=(32, 32), width=8).eval()
    g.save(tmp_path / "g.pt", {"round": 1})
    h, meta = PatchGenerator.load(tmp_path / "g.pt")
    z = torch.randn(2, 8)
    assert meta == {"round": 1} and torch.equal(g(z), h(z))
    (tmp_path / "bad.pt").write_bytes(b"nope")
    from patchsim.errors import CheckpointError

    with pytest.raises(CheckpointError, match="bad.pt"):
        PatchGenerator.load(tmp_path / "bad.pt")


def test_each_sample_of_a_batch_gets_its_own_patch(sim):
    from patchsim.eot.pipeline import EOT, EOTConfig
    from patchsim.eot.scenes import SceneConfig, build_sim_bank

    bank = build_sim_bank(SceneConfig(frames=2, frames_per_seed=2, distance_m=(8.0, 12.0)), sim)
    eot = EOT(EOTConfig(crop_px=128))
    params = eot.sample(bank, 2, torch.Generator().manual_seed(0))
    params["scene"] = torch.tensor([0, 0])
    outline = _outline((32, 32))
    black, white = torch.zeros(3, 32, 32), torch.ones(3, 32, 32)
    both = eot.render(torch.stack([black, white]), outline[None].expand(2, -1, -1, -1), params, bank).images
    one_b = eot.render(black, outline, params, bank).images
    one_w = eot.render(white, outline, params, bank).images
    assert torch.allclose(both[0], one_b[0], atol=1e-5) and torch.allclose(both[1], one_w[1], atol=1e-5)
