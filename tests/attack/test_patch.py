import pytest
import torch

from patchsim.attack.patch import Patch, PatchConfig, SlotInfo, place_grid_stickers, place_stickers, total_variation
from patchsim.config import FieldError
from patchsim.eot.printer import default_profile, non_printability

STOP = SlotInfo("stop_face", "sign_face", (0.75, 0.75), "stop_sign")


def test_poster_covers_the_octagon_and_stickers_stay_within_budget():
    poster = Patch(STOP, PatchConfig(mask="full"))
    assert poster.coverage() == 1.0
    assert abs(poster.outline_area_m2 - 0.466) < 0.01  # area of a 0.75 m regular octagon
    p = Patch(STOP, PatchConfig(mask="stickers", stickers=4, sticker_size_m=(0.17, 0.17)))
    saliency = torch.zeros(p.hw)
    saliency[10:30, 60:90] = 1.0  # the search must put a sticker here
    pos = place_stickers(saliency, p, 4, (0.17, 0.17), 0.25)
    assert len(pos) == 4
    p.set_mask(p.sticker_mask(pos))
    assert 0.2 < p.coverage() <= 0.25
    rects = p.sticker_mask(pos)
    assert float((rects * p.outline).sum() / rects.sum()) > 0.98  # stickers lie on the face
    x, y = pos[0]
    assert 60 / 128 - 0.17 <= x <= 90 / 128 and 10 / 128 - 0.17 <= y <= 30 / 128


def test_grid_stickers_take_the_salient_cells_and_merge_per_row():
    p = Patch(STOP, PatchConfig(mask="stickers", sticker_layout="grid", sticker_size_m=(0.0625, 0.0625)))  # 8 px
    saliency = torch.zeros(p.hw)
    saliency[40:48, 16:32] = 5.0  # one row of two salient cells: one 2-cell sticker
    saliency[56:64, 64:72] = 4.0  # and a single cell
    rects = place_grid_stickers(saliency, p, (0.0625, 0.0625), 0.25)
    assert (0.125, 0.3125, 0.125, 0.0625) in rects
    assert (0.5, 0.4375, 0.0625, 0.0625) in rects
    p.set_mask(p.sticker_mask(rects))
    assert 0.23 < p.coverage() <= 0.25  # the budget is filled, never exceeded
    mask = p.sticker_mask(rects)
    assert float((mask * p.outline).sum() / mask.sum()) > 0.98  # whole cells on the face only
    assert sum(w * h for _, _, w, h in rects) <= 0.25 * p.outline_area_m2 + 1e-9
    for x, y, *_ in rects:  # whole cells of the grid
        assert abs(x / 0.0625 - round(x / 0.0625)) < 1e-9 and abs(y / 0.0625 - round(y / 0.0625)) < 1e-9


def test_grid_layout_is_checked():
    with pytest.raises(FieldError, match="sticker_layout"):
        PatchConfig(sticker_layout="spiral")
    p = Patch(STOP, PatchConfig(mask="stickers"))
    with pytest.raises(FieldError, match="do not fit"):
        place_grid_stickers(torch.ones(p.hw), p, (0.9, 0.9), 0.25)


def test_print_pixels_follow_the_dpi():
    p = Patch(STOP, PatchConfig(mask="full", print_dpi=100))
    img, mask = p.print_pixels()
    assert img.shape[:2] == mask.shape == (round(0.75 / 0.0254 * 100),) * 2


def test_regularizers():
    flat = torch.full((3, 16, 16), 0.5)
    noisy = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert total_variation(flat) == 0 and total_variation(noisy) > 0.2
    prof = default_profile()
    palette = torch.as_tensor(prof.palette, dtype=torch.float32)
    on_palette = palette[:4].T.reshape(3, 2, 2)
    assert non_printability(on_palette, palette) < 1e-3
    assert non_printability(torch.zeros(3, 2, 2), palette) > 0.05  # pure black is outside the printer's gamut
    # the same value and gradient as the distance to every palette colour and a minimum over them
    g = torch.Generator().manual_seed(1)
    seen = torch.rand(3, 16, 16, generator=g).requires_grad_(True)
    mask = (torch.rand(1, 16, 16, generator=g) > 0.6).float() * torch.rand(1, 16, 16, generator=g)
    full = torch.sqrt(((seen.reshape(3, -1).T[:, None] - palette[None]) ** 2).sum(-1) + 1e-8).min(1).values
    brute = (full * mask.reshape(-1)).sum() / (mask.sum() + 1e-8)
    fast = non_printability(seen, palette, mask)
    assert torch.allclose(fast, brute)
    assert torch.allclose(torch.autograd.grad(fast, seen)[0], torch.autograd.grad(brute, seen)[0])


def test_target_init_paints_the_target_sign_and_needs_a_sign_kind():
    import pytest

    from patchsim.config import FieldError

    p = Patch(STOP, PatchConfig(mask="full", init="target"), target_kind="speed_limit")
    c = p.colours.detach()
    red = c[0] - c[1:].mean(0)
    assert float(red.max()) < 0.2  # no stop-sign red left
    assert float(c.mean()) > 0.6 and float(c.min()) < 0.2  # a white face with a black legend
    assert float((p.base[0] - p.base[1:].mean(0)).max()) > 0.5  # while the base is the red stop face
    with pytest.raises(FieldError, match="init: target needs a sign kind"):
        Patch(STOP, PatchConfig(mask="full", init="target"), target_kind="vehicle")
    with pytest.raises(FieldError, match="init must be"):
        PatchConfig(init="speed_limit")


def test_long_runs_of_grid_cells_split_into_printable_strips():
    p = Patch(STOP, PatchConfig(mask="stickers", sticker_layout="grid", sticker_size_m=(0.0625, 0.0625)))
    saliency = torch.zeros(p.hw)
    saliency[40:48, :] = 1.0  # a whole row is salient: 12 cells, 0.75 m
    rects = place_grid_stickers(saliency, p, (0.0625, 0.0625), 0.25)
    row = [r for r in rects if abs(r[1] - 0.3125) < 1e-9]
    assert len(row) >= 2 and all(w <= 0.15 + 1e-9 for _, _, w, _ in row)
    assert abs(sum(w for _, _, w, _ in row) - 0.75) < 1e-9  # the split strips still cover the row


def test_stickers_must_be_few_and_wide_enough_to_apply():
    slot = SlotInfo("stop_face", "sign_face", (0.75, 0.75), "stop_sign")
    strips = Patch(slot, PatchConfig(mask="stickers", sticker_size_m=(0.32, 0.06), stickers=6))
    strips.set_mask(strips.sticker_mask(place_stickers(torch.rand(strips.hw), strips, 6, (0.32, 0.06), 0.25)))
    strips.check_applicable()  # six strips of 31 x 5.5 cm: fine
    pieces = strips.pieces()
    assert 1 <= len(pieces) <= 6 and min(p["short_side_m"] for p in pieces) >= 0.05
    assert sum(p["area_m2"] for p in pieces) == pytest.approx(strips.coverage() * strips.outline_area_m2, rel=1e-3)

    confetti = Patch(slot, PatchConfig(mask="stickers", sticker_size_m=(0.04, 0.04), stickers=20))
    confetti.set_mask(confetti.sticker_mask(place_stickers(torch.rand(confetti.hw), confetti, 20, (0.04, 0.04), 0.25)))
    with pytest.raises(FieldError) as exc:
        confetti.check_applicable()
    assert exc.value.key == "patch.max_pieces"
    confetti.cfg.max_pieces = None
    with pytest.raises(FieldError) as exc:
        confetti.check_applicable()
    assert exc.value.key == "patch.min_piece_m" and "narrower than min_piece_m 0.05" in str(exc.value)
