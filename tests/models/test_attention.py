"""STADO's mask-guided attention module: shapes, modulation forms, temporal mixing, gradients."""

from __future__ import annotations

import pytest
import torch

from stad.models.attention import MaskGuidedAttention


def _constant_mask(module: MaskGuidedAttention, logit: float) -> None:
    """Make the mask head output ``logit`` everywhere (last conv: zero weights, bias ``logit``)."""
    with torch.no_grad():
        module.mask_head[2].weight.zero_()
        module.mask_head[2].bias.fill_(logit)


def test_shapes_and_mask_logits_per_frame() -> None:
    torch.manual_seed(0)
    module = MaskGuidedAttention(in_channels=8, hidden_channels=4)
    features = torch.randn(2, 3, 8, 5, 6)
    out = module(features)
    assert out.features.shape == (2, 3, 8, 5, 6)
    assert out.mask_logits.shape == (2, 3, 5, 6)
    assert torch.isfinite(out.features).all() and torch.isfinite(out.mask_logits).all()
    # without temporal mixing a frame's mask depends on that frame only
    changed = features.clone()
    changed[:, 0] += 5.0
    again = module.mask_logits(changed)
    torch.testing.assert_close(again[:, 1:], out.mask_logits[:, 1:])
    assert not torch.allclose(again[:, 0], out.mask_logits[:, 0])


@pytest.mark.parametrize(("form", "factor"), [("multiplicative", lambda m: m), ("residual", lambda m: 1 + m)])
def test_modulation_forms_with_a_known_mask(form, factor) -> None:
    torch.manual_seed(0)
    module = MaskGuidedAttention(in_channels=4, hidden_channels=4, form=form)
    _constant_mask(module, 1.5)
    features = torch.randn(1, 2, 4, 3, 3)
    out = module(features)
    m = torch.sigmoid(torch.tensor(1.5))
    torch.testing.assert_close(out.features, features * factor(m))
    torch.testing.assert_close(out.mask_logits, torch.full((1, 2, 3, 3), 1.5))


def test_multiplicative_mask_zero_switches_features_off_residual_keeps_them() -> None:
    features = torch.randn(1, 2, 4, 3, 3)
    mult = MaskGuidedAttention(in_channels=4, form="multiplicative")
    res = MaskGuidedAttention(in_channels=4, form="residual")
    _constant_mask(mult, -30.0)
    _constant_mask(res, -30.0)
    assert mult(features).features.abs().max() < 1e-9
    torch.testing.assert_close(res(features).features, features)


def test_temporal_mixing_starts_as_identity_and_mixes_neighbour_frames() -> None:
    torch.manual_seed(0)
    plain = MaskGuidedAttention(in_channels=4, hidden_channels=4)
    temporal = MaskGuidedAttention(in_channels=4, hidden_channels=4, temporal=True, temporal_kernel=3)
    temporal.mask_head.load_state_dict(plain.mask_head.state_dict())
    features = torch.randn(2, 4, 4, 3, 5)
    per_frame = plain.mask_logits(features)  # [B, K, h, w]
    torch.testing.assert_close(temporal.mask_logits(features), per_frame)  # identity at init
    with torch.no_grad():
        temporal.temporal.weight.copy_(torch.tensor([[[0.25, 0.5, 0.25]]]))
        temporal.temporal.bias.fill_(0.1)
    mixed = temporal.mask_logits(features)
    # replicate padding: frame 0 sees itself twice, the last frame too
    padded = torch.cat((per_frame[:, :1], per_frame, per_frame[:, -1:]), dim=1)
    expected = 0.25 * padded[:, :-2] + 0.5 * padded[:, 1:-1] + 0.25 * padded[:, 2:] + 0.1
    torch.testing.assert_close(mixed, expected)


def test_gradient_reaches_the_mask_head_without_supervision() -> None:
    torch.manual_seed(0)
    for form in ("multiplicative", "residual"):
        module = MaskGuidedAttention(in_channels=4, hidden_channels=4, form=form, temporal=True)
        features = torch.randn(1, 3, 4, 4, 4)
        (module(features).features ** 2).sum().backward()  # a loss on the modulated features only
        for name, param in module.named_parameters():
            if name.startswith("temporal.weight") or name.startswith("mask_head"):
                assert param.grad is not None and param.grad.abs().sum() > 0, (form, name)


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError, match="attention form"):
        MaskGuidedAttention(in_channels=4, form="additive")
    with pytest.raises(ValueError, match="odd"):
        MaskGuidedAttention(in_channels=4, temporal=True, temporal_kernel=2)
    with pytest.raises(ValueError, match=r"\(B, K, C, h, w\)"):
        MaskGuidedAttention(in_channels=4)(torch.randn(2, 4, 3, 3))
