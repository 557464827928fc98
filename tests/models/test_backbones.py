"""Backbones and necks: shapes, no NaN, DCNv2 semantics vs a bilinear-sampling reference, ImageNet weight files."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch import nn

from stad.errors import StadError
from stad.models.backbones import DeconvNeck, DLAUpNeck, ModulatedDeformConv2d, dla34, resnet18
from stad.models.backbones.neck import bilinear_upsample_init_


@pytest.mark.parametrize("deformable", [True, False])
def test_resnet18_deconv_neck_shapes(deformable: bool) -> None:
    torch.manual_seed(0)
    backbone = resnet18()
    neck = DeconvNeck(backbone.channels[-1], deformable=deformable)
    feats = backbone.forward_features(torch.randn(2, 3, 64, 64))
    assert backbone.channels == [512] and backbone.strides == [32]
    out = neck(feats)
    assert out.shape == (2, 64, 16, 16) and neck.out_channels == 64 and neck.stride == 4
    assert torch.isfinite(out).all()
    has_dcn = any(isinstance(m, ModulatedDeformConv2d) for m in neck.modules())
    assert has_dcn == deformable


def test_dla34_up_neck_shapes_and_flow_input() -> None:
    torch.manual_seed(0)
    backbone = dla34(in_chans=6)
    assert backbone.channels == [64, 128, 256, 512] and backbone.strides == [4, 8, 16, 32]
    neck = DLAUpNeck(backbone.channels, backbone.strides, deformable=True)
    out = neck(backbone.forward_features(torch.randn(1, 6, 64, 64)))
    assert out.shape == (1, 64, 16, 16) and torch.isfinite(out).all()
    assert [len(ida.proj) for ida in neck.dla_up] == [1, 2, 3] and len(neck.ida_up.proj) == 2


def _bilinear(img: np.ndarray, y: float, x: float) -> np.ndarray:
    """Bilinear sample of ``img`` (C, H, W) at (y, x); corners outside the image count as 0 (DCNv2's rule)."""
    C, H, W = img.shape  # noqa: N806
    if y <= -1 or y >= H or x <= -1 or x >= W:
        return np.zeros(C)
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    out = np.zeros(C)
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < H and 0 <= xx < W:
                out += wy * wx * img[:, yy, xx]
    return out


def _dcnv2_reference(layer: ModulatedDeformConv2d, x: torch.Tensor) -> np.ndarray:
    """DCNv2 from its definition, y(p) = sum_t w_t * x(p + p_t + dp_t) * m_t + b, with MOC's channel split:

    the offset-mask conv gives 27 channels = o1 (9) | o2 (9) | mask logits (9); offset = cat(o1, o2) holds for
    kernel tap t = 3*i + j the row shift at channel 2t and the column shift at channel 2t+1.
    """
    om = nn.functional.conv2d(x, layer.offset_mask.weight, layer.offset_mask.bias, padding=1)[0].detach().numpy()
    offset = np.concatenate([om[0:9], om[9:18]], axis=0)  # [18, H, W]
    mask = 1 / (1 + np.exp(-om[18:27]))  # [9, H, W]
    img = x[0].detach().numpy().astype(np.float64)
    weight = layer.conv.weight.detach().numpy().astype(np.float64)  # [O, C, 3, 3]
    bias = layer.conv.bias.detach().numpy().astype(np.float64)
    O, _, H, W = weight.shape[0], None, img.shape[1], img.shape[2]  # noqa: N806
    out = np.zeros((O, H, W))
    for py in range(H):
        for px in range(W):
            acc = bias.copy()
            for i in range(3):
                for j in range(3):
                    t = 3 * i + j
                    dy, dx = offset[2 * t, py, px], offset[2 * t + 1, py, px]
                    sample = _bilinear(img, py - 1 + i + dy, px - 1 + j + dx) * mask[t, py, px]  # [C]
                    acc += weight[:, :, i, j] @ sample
            out[:, py, px] = acc
    return out


def test_modulated_deform_conv_matches_dcnv2_definition() -> None:
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(2, 3, 3, padding=1)
    with torch.no_grad():
        layer.offset_mask.weight.normal_(0, 0.5)  # offsets of about +-1.5 px, some samples fall outside
        layer.offset_mask.bias.normal_(0, 0.5)
        layer.conv.bias.normal_()
    x = torch.randn(1, 2, 5, 6)
    got = layer(x)[0].detach().numpy()
    np.testing.assert_allclose(got, _dcnv2_reference(layer, x), rtol=1e-4, atol=1e-5)


def test_offset_order_is_y_then_x() -> None:
    """A pure +1 column shift (channel 2t+1 of every tap) on an image that varies along x only."""
    layer = ModulatedDeformConv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        layer.conv.weight.zero_()
        layer.conv.weight[0, 0, 1, 1] = 1.0  # centre tap only
        layer.conv.bias.zero_()
        layer.offset_mask.weight.zero_()
        odd = torch.arange(1, 18, 2)  # channels 2t+1 = x shifts in cat(o1, o2)
        bias = torch.zeros(27)
        bias[odd] = 1.0
        bias[18:] = 20.0  # mask ~ 1
        layer.offset_mask.bias.copy_(bias)
    x = torch.arange(6, dtype=torch.float32).repeat(4, 1)[None, None]  # value = column index
    out = layer(x)[0, 0].detach()
    np.testing.assert_allclose(out[:, :5].numpy(), x[0, 0, :, 1:].numpy(), atol=1e-5)  # read one column to the right


def test_fresh_deform_conv_is_half_a_plain_conv() -> None:
    torch.manual_seed(0)
    layer = ModulatedDeformConv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 7, 7)
    plain = nn.functional.conv2d(x, layer.conv.weight, None, padding=1) * 0.5 + layer.conv.bias[None, :, None, None]
    torch.testing.assert_close(layer(x), plain, rtol=1e-5, atol=1e-5)


def test_bilinear_upsample_init_doubles_constant_maps() -> None:
    up = nn.ConvTranspose2d(3, 3, 4, stride=2, padding=1, groups=3, bias=False)
    bilinear_upsample_init_(up)
    out = up(torch.ones(1, 3, 5, 5))
    assert out.shape == (1, 3, 10, 10)
    torch.testing.assert_close(out[..., 1:-1, 1:-1], torch.ones(1, 3, 8, 8))
    dense = nn.ConvTranspose2d(2, 2, 4, stride=2, padding=1, bias=False)
    bilinear_upsample_init_(dense)
    x = torch.stack((torch.ones(5, 5), 3 * torch.ones(5, 5)))[None]
    torch.testing.assert_close(dense(x)[0, :, 1:-1, 1:-1], x[0, :, :4, :4].repeat(1, 2, 2))


def test_imagenet_weight_files_load(tmp_path) -> None:
    resnet_file = tmp_path / "resnet18.pth"
    reference = timm.create_model("resnet18", pretrained=False)
    torch.save(reference.state_dict(), resnet_file)  # torchvision/timm layout with the fc classifier
    backbone = resnet18(weights=resnet_file)
    torch.testing.assert_close(backbone.body.conv1.weight, reference.conv1.weight)

    dla_file = tmp_path / "dla34.pth"
    sd = timm.create_model("dla34", pretrained=False).state_dict()
    sd["level3.project.0.weight"] = torch.zeros(128, 64, 1, 1)  # the original file's unused layers
    sd["level4.project.0.weight"] = torch.zeros(256, 128, 1, 1)
    torch.save({"state_dict": sd}, dla_file)
    dla = dla34(weights=dla_file)
    torch.testing.assert_close(dla.body.level5.root.conv.weight, sd["level5.root.conv.weight"])

    flow = resnet18(in_chans=15, weights=resnet_file)  # 5 stacked flow images: MOC's convert2flow rule
    torch.testing.assert_close(flow.body.conv1.weight, reference.conv1.weight.mean(1, keepdim=True).expand(-1, 15, -1, -1))

    bad = dict(reference.state_dict())
    bad["layer1.0.conv1.weight"] = torch.zeros(1, 1, 3, 3)
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(StadError, match="layer1.0.conv1.weight has shape"):
        resnet18(weights=tmp_path / "bad.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resnet18(weights=tmp_path / "missing.pth")
