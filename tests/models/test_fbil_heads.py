"""FBIL, ACAR-Net (HR2O) and linear heads (shared/methods/FBIL.md §3-§4, §7 facts 9, 13, 14) on tiny sizes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stad.models.heads.acar import ACARHead, HR2ONonLocal
from stad.models.heads.fbil import (
    FBILHead,
    LinearHead,
    effective_sizes,
    fbil_head_full,
    mask_regions,
    random_cell_masks,
    sine_position_embedding,
)

H, W = 8, 16  # padded feature map
CS, CF = 16, 4  # slow / fast channels
K = 5  # classes
TINY = {"in_channels": CS + CF, "num_classes": K, "reduce_dim": 16, "num_heads": 2, "ffn_dim": 32}

# Three clips: 0 unpadded with one actor at the border, 1 padded (eff 6x12) with two actors, 2 padded in height
# (eff 6x16) with three actors. Boxes are exact binary fractions so the regions below are hand-computable.
ROIS = torch.tensor(
    [
        [0, 0.625, 0.5, 0.875, 0.875],
        [1, 0.125, 0.25, 0.375, 0.5],
        [1, 0.5, 0.125, 0.625, 0.625],
        [2, 0.125, 0.125, 0.25, 0.5],
        [2, 0.375, 0.25, 0.5, 0.5],
        [2, 0.625, 0.125, 0.75, 0.375],
    ]
)
VALID = torch.tensor([[1.0, 1.0], [0.75, 0.75], [1.0, 0.75]])  # [w_frac, h_frac]
SEEDS = torch.tensor([11, -7, 2**40 + 3])


def tiny_fbil(**overrides: object) -> FBILHead:
    torch.manual_seed(0)
    return FBILHead(**{**TINY, "e_depth": 2, "l_depth": 1, "c_depth": 2, **overrides})  # type: ignore[arg-type]


def make_features(num_clips: int = 3, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(num_clips, CS, 2, H, W, generator=g), torch.randn(num_clips, CF, 8, H, W, generator=g)]


def counts_in_out(mask: torch.Tensor, region: list[int], eff: tuple[int, int]) -> tuple[int, int, int, int]:
    """(masked inside, |inside|, masked outside, |outside|) of one clip's (h, w) mask over its eff map."""
    x1, y1, x2, y2 = region
    ys = torch.arange(mask.shape[0]).view(-1, 1)
    xs = torch.arange(mask.shape[1]).view(1, -1)
    valid = (ys < eff[0]) & (xs < eff[1])
    inside = valid & (xs >= x1) & (xs <= x2) & (ys >= y1) & (ys <= y2)
    outside = valid & ~inside
    return int((mask & inside).sum()), int(inside.sum()), int((mask & outside).sum()), int(outside.sum())


# --- fact 9: full size ----------------------------------------------------------------------------------------


def expected_fbil_keys(depth: int = 3) -> set[str]:
    mha = ("in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias")
    wb = ("weight", "bias")
    keys = {"conv_reduce.weight", "norm.weight", "norm.bias", "fc.weight"}
    keys |= {f"weight_linear.layers.{i}.{p}" for i in range(3) for p in wb}
    for layer in range(depth):
        keys |= {f"feature_encoder.self_atten.{layer}.self_attn.{p}" for p in mha}
        keys |= {f"feature_encoder.self_atten.{layer}.norm.{p}" for p in wb}
        keys |= {f"feature_encoder.ffn.{layer}.{m}.{p}" for m in ("linear1", "linear2", "norm") for p in wb}
        for branch in ("context_atten", "local_atten"):
            keys |= {f"{branch}.self_atten.{layer}.self_attn.{p}" for p in mha}
            keys |= {f"{branch}.self_atten.{layer}.norm.{p}" for p in wb}
            keys |= {f"{branch}.cross_atten.{layer}.multihead_attn.{p}" for p in mha}
            keys |= {f"{branch}.cross_atten.{layer}.norm.{p}" for p in wb}
            keys |= {f"{branch}.ffn.{layer}.{m}.{p}" for m in ("linear1", "linear2", "norm") for p in wb}
    return keys


def test_full_size_head_has_fbil_parameter_count_and_key_names() -> None:
    with torch.device("meta"):
        head = fbil_head_full()
    state = head.state_dict()
    assert sum(p.numel() for p in head.parameters()) == 105_387_010
    assert len(state) == 154
    assert set(state) == expected_fbil_keys()
    assert state["conv_reduce.weight"].shape == (1024, 2304, 1, 1)
    assert state["feature_encoder.self_atten.0.self_attn.in_proj_weight"].shape == (3072, 1024)
    assert state["local_atten.ffn.2.linear1.weight"].shape == (2048, 1024)
    assert state["weight_linear.layers.2.weight"].shape == (2, 1024)
    assert state["fc.weight"].shape == (60, 2048)


def test_full_size_acar_and_linear_heads_build() -> None:
    with torch.device("meta"):
        acar = ACARHead(in_channels=2304, num_classes=60)
        linear = LinearHead(in_channels=2304, num_classes=60)
    assert acar.fc2.in_features == 1024 and acar.conv1.in_channels == 2048 and len(acar.hr2o) == 1
    assert sum(p.numel() for p in linear.parameters()) == 2304 * 1024 + 1024 * 60 + 60


# --- fact 13: attention -----------------------------------------------------------------------------------------


def test_key_padding_mask_gives_exactly_zero_weight_and_one_token_self_attention_is_value_projection() -> None:
    head = tiny_fbil()
    g = torch.Generator().manual_seed(1)
    cross = head.local_atten.cross_atten[0].multihead_attn.eval()
    query, memory = torch.randn(3, 1, 16, generator=g), torch.randn(3, 10, 16, generator=g)
    mask = torch.rand(3, 10, generator=g) < 0.5
    mask[:, 0] = False
    _, weights = cross(query, memory, memory, key_padding_mask=mask, need_weights=True, average_attn_weights=False)
    assert weights.shape == (3, 2, 1, 10)
    assert bool((weights[mask[:, None, None, :].expand_as(weights)] == 0).all())
    assert torch.allclose(weights.sum(-1), torch.ones(3, 2, 1))

    attn = head.context_atten.self_atten[0].self_attn.eval()
    x = torch.randn(4, 1, 16, generator=g)
    w_v, b_v = attn.in_proj_weight[32:], attn.in_proj_bias[32:]
    expected = attn.out_proj(F.linear(x, w_v, b_v))
    assert torch.allclose(attn(x, x, x, need_weights=False)[0], expected, atol=1e-6)


# --- fact 14: sine positions ------------------------------------------------------------------------------------


def test_sine_embedding_values_on_16x29() -> None:
    pos = sine_position_embedding(torch.ones(1, 16, 29, dtype=torch.bool), 512)
    assert pos.shape == (1, 1024, 16, 29)  # P[b, channel, row, col]
    assert pos[0, 0, 0, 0].item() == pytest.approx(math.sin(2 * math.pi / 16), abs=1e-5)  # 0.38268
    assert pos[0, 1, 0, 0].item() == pytest.approx(math.cos(2 * math.pi / 16), abs=1e-5)  # 0.92388
    assert pos[0, 512, 0, 0].item() == pytest.approx(math.sin(2 * math.pi / 29), abs=1e-5)  # 0.21497
    assert pos[0, 512, 0, 0].item() == pytest.approx(0.21497, abs=1e-5)
    # channel 2 of y: sin(y_e / 1e4^(2/512)); last row: y_e = 16 / (16 + 1e-6) * 2π
    assert pos[0, 2, 15, 3].item() == pytest.approx(math.sin(2 * math.pi / 1e4 ** (2 / 512)), abs=1e-4)


def test_sine_embedding_of_a_padded_clip_is_normalised_on_its_unpadded_size() -> None:
    valid = torch.zeros(1, 8, 16, dtype=torch.bool)
    valid[:, :6, :11] = True
    padded = sine_position_embedding(valid, 8)
    alone = sine_position_embedding(torch.ones(1, 6, 11, dtype=torch.bool), 8)
    assert torch.allclose(padded[:, :, :6, :11], alone, atol=1e-6)
    assert not torch.allclose(sine_position_embedding(torch.ones(1, 8, 16, dtype=torch.bool), 8)[:, :, :6, :11], alone)


# --- masks ------------------------------------------------------------------------------------------------------


def test_effective_sizes_do_not_round_up_on_float_error() -> None:
    eff = effective_sizes(torch.tensor([[10 / 14, 1.0], [0.5, 0.3]], dtype=torch.float64), (8, 14))
    assert eff.tolist() == [[8, 10], [3, 7]]  # [eff_h, eff_w]; ceil(8 * 0.3) = 3, ceil(14 * 0.5) = 7


@pytest.mark.parametrize(
    "compat, regions, expected",
    [
        # clip 0, n=1: box x 10..14 y 4..7 doubled about (12, 5.5) -> [8, 2.5, 16, 8.5], clipped to 16x8 -> [8, 2, 16, 8]
        # clip 1, n=2 (eff 6x12): union of x 2..6 y 2..4 and x 8..10 y 1..5 -> [2, 1, 10, 5]
        #   compat (x*12, y*6): union of x 1.5..4.5 y 1.5..3 and x 6..7.5 y .75..3.75 -> [1, 0, 8, 4]
        # (fg = M_glob β 0.2 δ 1.0; bg = M_loc β 0.9 δ 0.2); counts (inside masked, |inside|, outside masked, |outside|)
        (False, [[8, 2, 16, 8], [2, 1, 10, 5]], {"fg": [(9, 48, 80, 80), (9, 45, 27, 27)], "bg": [(43, 48, 16, 80), (40, 45, 5, 27)]}),
        (True, [[8, 2, 16, 8], [1, 0, 8, 4]], {"fg": [(9, 48, 80, 80), (8, 40, 32, 32)], "bg": [(43, 48, 16, 80), (36, 40, 6, 32)]}),
    ],
)
def test_mask_counts_for_doubled_box_and_union_rules(compat: bool, regions: list, expected: dict) -> None:
    head = tiny_fbil(compat_mask_coords=compat)
    masks = head.key_masks(ROIS[:3], VALID[:2], (H, W), SEEDS[:2])
    assert masks.regions.tolist() == regions
    assert masks.eff_sizes.tolist() == [[8, 16], [6, 12]]
    for b in range(2):
        eff = tuple(masks.eff_sizes[b].tolist())
        assert counts_in_out(masks.foreground[b], regions[b], eff) == expected["fg"][b]
        assert counts_in_out(masks.background[b], regions[b], eff) == expected["bg"][b]
        padded = masks.padding[b]
        assert int(padded.sum()) == H * W - eff[0] * eff[1]
        assert not bool((masks.foreground[b] & padded).any() or (masks.background[b] & padded).any())
    assert not torch.equal(masks.foreground, masks.background)


def test_compat_mask_coords_changes_the_region_of_padded_clips_only() -> None:
    fixed = tiny_fbil().key_masks(ROIS, VALID, (H, W), SEEDS)
    compat = tiny_fbil(compat_mask_coords=True).key_masks(ROIS, VALID, (H, W), SEEDS)
    assert torch.equal(fixed.regions[0], compat.regions[0])  # unpadded: same coordinates
    assert torch.equal(fixed.foreground[0], compat.foreground[0]) and torch.equal(fixed.background[0], compat.background[0])
    assert not torch.equal(fixed.regions[1], compat.regions[1])
    assert not torch.equal(fixed.regions[2], compat.regions[2])  # padded in height only
    assert fixed.regions[2, 0] == compat.regions[2, 0] and fixed.regions[2, 2] == compat.regions[2, 2]


def random_regions(num: int, g: torch.Generator, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = size
    eff = torch.stack((torch.randint(1, h + 1, (num,), generator=g), torch.randint(1, w + 1, (num,), generator=g)), 1)
    a = torch.randint(-2, w + 2, (num, 2), generator=g).sort(1).values
    b = torch.randint(-2, h + 2, (num, 2), generator=g).sort(1).values
    return torch.stack((a[:, 0], b[:, 0], a[:, 1], b[:, 1]), 1), eff


@pytest.mark.parametrize("beta", [0.0, 0.2, 0.5, 0.9])
def test_masked_cells_never_leave_the_region_when_delta_is_zero(beta: float) -> None:
    g = torch.Generator().manual_seed(int(beta * 10))
    regions, eff = random_regions(200, g, (H, W))
    seeds = torch.randint(0, 2**62, (200,), generator=g)
    masks = random_cell_masks(regions, eff, (H, W), beta=beta, delta=0.0, seeds=seeds)
    for b in range(200):
        masked_in, inside, masked_out, _ = counts_in_out(masks[b], regions[b].tolist(), tuple(eff[b].tolist()))
        if inside:  # an empty region would trigger the guard (one cell unmasked is then all there is to do)
            assert (masked_in, masked_out) == (math.floor(beta * inside), 0)
        assert int(masks[b].sum()) == masked_in + masked_out


def test_random_masks_choose_cells_uniformly() -> None:
    num = 4000
    regions = torch.tensor([[2, 1, 6, 4]]).repeat(num, 1)  # 5x4 = 20 cells inside an 8x16 map
    eff = torch.tensor([[H, W]]).repeat(num, 1)
    masks = random_cell_masks(regions, eff, (H, W), beta=0.25, delta=0.5, seeds=torch.arange(num) * 7919)
    freq = masks.float().mean(0)  # [h, w]
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[1:5, 2:7] = True
    assert bool((masks.flatten(1)[:, inside.flatten()].sum(1) == 5).all())  # exact counts in every draw
    assert float((freq[inside] - 0.25).abs().max()) < 0.05
    assert float((freq[~inside] - 0.5).abs().max()) < 0.05


def test_the_two_branches_draw_independent_masks() -> None:
    """FBIL draws M_glob and M_loc separately: the 20% inside cells of one are not nested in the 90% of the other."""
    num = 64
    rois = torch.cat((torch.arange(num, dtype=torch.float32)[:, None], ROIS[:1, 1:].repeat(num, 1)), dim=1)
    masks = tiny_fbil().key_masks(rois, None, (H, W), torch.arange(num) * 101 + 5)
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[2:, 8:] = True  # region [8, 2, 16, 8] (see the counts test)
    fg_in, bg_in = masks.foreground & inside, masks.background & inside
    nested = (fg_in & ~bg_in).flatten(1).sum(1) == 0  # [num]
    assert 5 < int(nested.sum()) < num - 5  # P(nested) = C(43, 9) / C(48, 9) ≈ 0.3 for independent draws
    assert len({tuple(m.flatten().tolist()) for m in masks.foreground}) == num  # every seed its own mask


def test_all_masked_row_guard_unmasks_the_nearest_cell_and_the_head_stays_finite() -> None:
    regions = torch.tensor([[16, 0, 16, 3], [-3, 9, -1, 12]])  # right of / below-left of the map
    eff = torch.tensor([[8, 16], [8, 12]])
    masks = random_cell_masks(regions, eff, (H, W), beta=0.2, delta=1.0, seeds=torch.tensor([1, 2]))
    assert int((~masks[0]).sum()) == 1 and not bool(masks[0, 0, 15])
    assert int((~masks[1][:8, :12]).sum()) == 1 and not bool(masks[1, 7, 0])

    head = tiny_fbil().eval()
    rois = torch.tensor([[0, 1.0, 0.25, 1.0, 0.5], [1, 0.2, 0.2, 0.4, 0.4]])  # zero-width box on the right border
    compat = tiny_fbil(compat_mask_coords=True).eval()
    for h in (head, compat):
        m = h.key_masks(rois, VALID[:2], (H, W), SEEDS[:2])
        assert m.regions[0, 0] == 16  # region starts off the map: only the guard keeps a key
        assert int((~(m.foreground[0] | m.padding[0])).sum()) == 1
        with torch.no_grad():
            out = h(make_features(2), rois, VALID[:2], mask_seeds=SEEDS[:2])
        assert bool(out.isfinite().all())


def test_eval_masks_do_not_depend_on_batch_composition_order_or_map_size() -> None:
    head = tiny_fbil().eval()
    full = head.key_masks(ROIS, VALID, (H, W), SEEDS)
    # clips (2, 1) in reverse order on the same map
    rois_rev = torch.cat((ROIS[3:], ROIS[1:3]))
    rois_rev[:, 0] = torch.tensor([0.0, 0, 0, 1, 1])
    rev = head.key_masks(rois_rev, VALID[[2, 1]], (H, W), SEEDS[[2, 1]])
    for new, old in ((0, 2), (1, 1)):
        assert torch.equal(rev.foreground[new], full.foreground[old])
        assert torch.equal(rev.background[new], full.background[old])
    # clip 1 alone on its cropped 6x12 map (boxes renormalised to it)
    alone_rois = ROIS[1:3].clone()
    alone_rois[:, 0] = 0
    alone_rois[:, [1, 3]] *= W / 12
    alone_rois[:, [2, 4]] *= H / 6
    alone = head.key_masks(alone_rois, None, (6, 12), SEEDS[1:2])
    assert torch.equal(alone.regions[0], full.regions[1])
    assert torch.equal(alone.foreground[0], full.foreground[1, :6, :12])
    assert torch.equal(alone.background[0], full.background[1, :6, :12])


# --- head outputs -----------------------------------------------------------------------------------------------


def test_batched_equals_one_clip_at_a_time_in_eval() -> None:
    head = tiny_fbil().eval()
    features = make_features(3)
    with torch.no_grad():
        batched = head(features, ROIS, VALID, mask_seeds=SEEDS)
    eff = effective_sizes(VALID, (H, W))
    for b in range(3):
        eh, ew = eff[b].tolist()
        rows = ROIS[:, 0] == b
        rois = ROIS[rows].clone()
        rois[:, 0] = 0
        rois[:, [1, 3]] *= W / ew  # same feature coordinates on the cropped map
        rois[:, [2, 4]] *= H / eh
        crop = [f[b : b + 1, :, :, :eh, :ew] for f in features]
        with torch.no_grad():
            single = head(crop, rois, None, mask_seeds=SEEDS[b : b + 1])
        assert torch.allclose(single, batched[rows], atol=1e-5), (b, (single - batched[rows]).abs().max())
    # and the order of the clips in the batch does not matter
    order = [2, 0, 1]
    rois = torch.cat([ROIS[ROIS[:, 0] == b] for b in order])
    rois[:, 0] = torch.cat([torch.full((int((ROIS[:, 0] == b).sum()),), float(i)) for i, b in enumerate(order)])
    with torch.no_grad():
        permuted = head([f[order] for f in features], rois, VALID[order], mask_seeds=SEEDS[order])
    expected = torch.cat([batched[ROIS[:, 0] == b] for b in order])
    assert torch.allclose(permuted, expected, atol=1e-5)


def test_branches_are_wired_as_fbil_wires_them() -> None:
    """``local_atten`` sees M_glob (β 0.2, δ 1.0: the actor region), ``context_atten`` M_loc (β 0.9, δ 0.2)."""
    head = tiny_fbil().eval()
    seen: dict[str, torch.Tensor] = {}
    for name in ("local_atten", "context_atten"):
        getattr(head, name).register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[2]))
    with torch.no_grad():
        head(make_features(3), ROIS, VALID, mask_seeds=SEEDS)
    masks = head.key_masks(ROIS, VALID, (H, W), SEEDS)
    clip = ROIS[:, 0].long()
    assert torch.equal(seen["local_atten"], (masks.foreground | masks.padding).flatten(1)[clip])
    assert torch.equal(seen["context_atten"], (masks.background | masks.padding).flatten(1)[clip])


def test_masks_change_the_output() -> None:
    head = tiny_fbil().eval()
    features = make_features(3)
    with torch.no_grad():
        a = head(features, ROIS, VALID, mask_seeds=SEEDS)
        b = head(features, ROIS, VALID, mask_seeds=SEEDS + 1)
        c = head(features, ROIS, VALID)  # evaluation without seeds: seed 0 for every clip
        d = head(features, ROIS, VALID, mask_seeds=torch.zeros(3, dtype=torch.int64))
    assert not torch.allclose(a, b)
    assert torch.equal(c, d)


def test_training_masks_come_from_the_generator() -> None:
    head = tiny_fbil(dropout=0.0).train()
    features = make_features(3)
    run = [head(features, ROIS, VALID, generator=torch.Generator().manual_seed(s)) for s in (5, 5, 6)]
    assert torch.equal(run[0], run[1])
    assert not torch.allclose(run[0], run[2])


def test_clips_without_rois_are_skipped() -> None:
    head = tiny_fbil().eval()
    features = make_features(3)
    rois = ROIS[ROIS[:, 0] != 1]  # clip 1 has no RoIs
    with torch.no_grad():
        out = head(features, rois, VALID, mask_seeds=SEEDS)
        two = rois.clone()
        two[two[:, 0] == 2, 0] = 1
        without = head([f[[0, 2]] for f in features], two, VALID[[0, 2]], mask_seeds=SEEDS[[0, 2]])
    assert out.shape == (4, K)
    assert torch.allclose(out, without, atol=1e-6)


def test_hr2o_attends_over_the_actors_of_a_clip_at_each_cell() -> None:
    torch.manual_seed(0)
    block = HR2ONonLocal(6, mlp_1x1=True).eval()
    x = torch.randn(3, 6, 2, 3)
    with torch.no_grad():
        out = block(x, torch.ones(3, 3, dtype=torch.bool))
        q, k, v = block.conv_q(x), block.conv_k(x), block.conv_v(x)
        agg = torch.empty_like(x)
        for y in range(2):
            for c in range(3):
                attn = (q[:, :, y, c] @ k[:, :, y, c].T / math.sqrt(6)).softmax(dim=1)  # [query, key]
                agg[:, :, y, c] = attn @ v[:, :, y, c]
        expected = x + block.conv(F.relu(block.norm(agg)))
    assert torch.allclose(out, expected, atol=1e-5)


def test_acar_actors_interact_only_within_their_clip() -> None:
    torch.manual_seed(0)
    head = ACARHead(in_channels=CS + CF, num_classes=K, reduce_dim=16, hidden_dim=8, depth=2).eval()
    features = make_features(3)
    with torch.no_grad():
        batched = head(features, ROIS, VALID)
        for b in range(3):
            rows = ROIS[:, 0] == b
            rois = ROIS[rows].clone()
            rois[:, 0] = 0
            single = head([f[b : b + 1] for f in features], rois)
            assert torch.allclose(single, batched[rows], atol=1e-5)
        moved = ROIS[2:3].clone()
        alone = head(features, moved)  # clip 1's second actor without its partner
    assert not torch.allclose(alone, batched[2:3], atol=1e-4)


def all_heads() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {
        "fbil": tiny_fbil(),
        "fbil_sigmoid": tiny_fbil(act="sigmoid", e_depth=1, c_depth=1),
        "acar": ACARHead(in_channels=CS + CF, num_classes=K, reduce_dim=16, hidden_dim=8, depth=2, mlp_1x1=False),
        "linear": LinearHead(in_channels=CS + CF, num_classes=K, reduce_dim=16),
    }


@pytest.mark.parametrize("name", ["fbil", "fbil_sigmoid", "acar", "linear"])
@pytest.mark.parametrize("num_rois", [0, 1, 6])
def test_output_shapes_for_zero_one_and_many_rois(name: str, num_rois: int) -> None:
    head = all_heads()[name]
    out = head(make_features(3), ROIS[:num_rois], VALID, generator=torch.Generator().manual_seed(0))
    assert out.shape == (num_rois, K)
    assert bool(out.isfinite().all())
    out.sum().backward()  # an empty batch still back-propagates (zero gradients)
    assert head.conv_reduce.weight.grad is not None


@pytest.mark.parametrize("name", ["fbil", "fbil_sigmoid", "acar", "linear"])
def test_gradients_reach_every_parameter(name: str) -> None:
    head = all_heads()[name].train()
    out = head(make_features(3), ROIS, VALID, generator=torch.Generator().manual_seed(0))
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    dead = [n for n, p in head.named_parameters() if p.grad is None or float(p.grad.abs().sum()) == 0.0]
    assert dead == []


def test_bad_inputs_are_reported() -> None:
    head = tiny_fbil()
    with pytest.raises(ValueError, match=r"rois of shape \[R, 5\]"):
        head(make_features(3), ROIS[:, 1:], VALID)
    with pytest.raises(ValueError, match="clip indices must lie in"):
        head(make_features(2), ROIS, VALID[:2])
    with pytest.raises(ValueError, match=r"mask_seeds of shape \[3\]"):
        head(make_features(3), ROIS, VALID, mask_seeds=SEEDS[:2])
    with pytest.raises(ValueError, match="valid_sizes must lie in"):
        head(make_features(3), ROIS, VALID * 0)
    with pytest.raises(ValueError, match="act must be"):
        tiny_fbil(act="relu")
    with pytest.raises(ValueError, match="at least 3x3"):
        ACARHead(in_channels=CS + CF, num_classes=K, reduce_dim=8, hidden_dim=8)(
            [torch.randn(1, CS, 2, 2, 8), torch.randn(1, CF, 8, 2, 8)], ROIS[:1]
        )
