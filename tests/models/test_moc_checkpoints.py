"""Loading MOC-Detector release checkpoints: a state dict in THEIR key layout (random values, right shapes)
is mapped, loaded strictly, and our outputs are compared with a direct functional computation from their keys.

Their layout (module names and shapes) is written out here from MOC-Detector's src/network/{moc_net,branch,
resnet,deconv,dla}.py; the functional references follow those modules' forward passes.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torchvision.ops import deform_conv2d

from stad.errors import StadError
from stad.models.checkpoints import (
    load_centernet_coco_weights,
    load_moc_weights,
    load_state_dict_strict,
    map_moc_release_state_dict,
)
from stad.models.moc import build_moc

K, C, HC = 3, 4, 16  # frames, classes, head_conv


def _bn(sd: dict, prefix: str, n: int, g: torch.Generator) -> None:
    sd[prefix + "weight"] = 1 + 0.1 * torch.randn(n, generator=g)
    sd[prefix + "bias"] = 0.1 * torch.randn(n, generator=g)
    sd[prefix + "running_mean"] = 0.1 * torch.randn(n, generator=g)
    sd[prefix + "running_var"] = 0.5 + torch.rand(n, generator=g)
    sd[prefix + "num_batches_tracked"] = torch.tensor(7)


def _dcn(sd: dict, prefix: str, cin: int, cout: int, g: torch.Generator) -> None:
    sd[prefix + "weight"] = 0.05 * torch.randn(cout, cin, 3, 3, generator=g)
    sd[prefix + "bias"] = 0.1 * torch.randn(cout, generator=g)
    sd[prefix + "conv_offset_mask.weight"] = 0.02 * torch.randn(27, cin, 3, 3, generator=g)
    sd[prefix + "conv_offset_mask.bias"] = 0.3 * torch.randn(27, generator=g)


def _branch(sd: dict, g: torch.Generator, *, wh_head_conv: int) -> None:
    for name, cin, mid, cout in (("hm", K * 64, HC, C), ("mov", K * 64, HC, 2 * K), ("wh", 64, wh_head_conv, 2)):
        sd[f"branch.{name}.0.weight"] = 0.05 * torch.randn(mid, cin, 3, 3, generator=g)
        sd[f"branch.{name}.0.bias"] = 0.1 * torch.randn(mid, generator=g)
        sd[f"branch.{name}.2.weight"] = 0.1 * torch.randn(cout, mid, 1, 1, generator=g)
        sd[f"branch.{name}.2.bias"] = 0.1 * torch.randn(cout, generator=g)


def _randomise(sd: dict, g: torch.Generator) -> dict:
    out = {}
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(3)
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith(("bn1.weight", "bn2.weight", "bn.weight", "1.weight")) and v.dim() == 1:
            out[k] = 1 + 0.1 * torch.randn(v.shape, generator=g)
        else:
            out[k] = 0.05 * torch.randn(v.shape, generator=g)
    return out


def moc_resnet18_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """MOC 'resnet_18' layout: torchvision-named ResNet body, deconv_layer.deconv_layers.{0..17}, branch.*"""
    g = torch.Generator().manual_seed(seed)
    body = {k: v for k, v in torchvision.models.resnet18().state_dict().items() if not k.startswith("fc.")}
    sd = {"backbone." + k: v for k, v in _randomise(body, g).items()}
    for s, (cin, planes) in enumerate([(512, 256), (256, 128), (128, 64)]):
        prefix = f"backbone.deconv_layer.deconv_layers.{6 * s}."
        _dcn(sd, prefix, cin, planes, g)
        _bn(sd, f"backbone.deconv_layer.deconv_layers.{6 * s + 1}.", planes, g)
        sd[f"backbone.deconv_layer.deconv_layers.{6 * s + 3}.weight"] = 0.1 * torch.randn(planes, planes, 4, 4, generator=g)
        _bn(sd, f"backbone.deconv_layer.deconv_layers.{6 * s + 4}.", planes, g)
    _branch(sd, g, wh_head_conv=64)
    return sd


def _deform_conv_block(sd: dict, prefix: str, cin: int, cout: int, g: torch.Generator) -> None:
    _bn(sd, prefix + "actf.0.", cout, g)
    _dcn(sd, prefix + "conv.", cin, cout, g)


def moc_dla34_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """MOC 'dla_34' layout: base.* (original DLA incl. unused level3/4 projects), dla_up.ida_{0,1,2}, ida_up, branch."""
    g = torch.Generator().manual_seed(seed)
    base = {k: v for k, v in timm.create_model("dla34", pretrained=False).state_dict().items() if not k.startswith("fc.")}
    base = _randomise(base, g)
    base["level3.project.0.weight"] = torch.randn(128, 64, 1, 1, generator=g)
    _bn(base, "level3.project.1.", 128, g)
    base["level4.project.0.weight"] = torch.randn(256, 128, 1, 1, generator=g)
    _bn(base, "level4.project.1.", 256, g)
    sd = {"backbone.base." + k: v for k, v in base.items()}
    # DLAUp: ida_0 = IDAUp(256, [256, 512], [1, 2]); ida_1 = IDAUp(128, [128, 256, 256], [1, 2, 2]);
    #        ida_2 = IDAUp(64, [64, 128, 128, 128], [1, 2, 2, 2]); then ida_up = IDAUp(64, [64, 128, 256], [1, 2, 4]).
    layout = {
        "backbone.dla_up.ida_0.": (256, [256, 512], [1, 2]),
        "backbone.dla_up.ida_1.": (128, [128, 256, 256], [1, 2, 2]),
        "backbone.dla_up.ida_2.": (64, [64, 128, 128, 128], [1, 2, 2, 2]),
        "backbone.ida_up.": (64, [64, 128, 256], [1, 2, 4]),
    }
    for prefix, (o, chans, factors) in layout.items():
        for j in range(1, len(chans)):
            _deform_conv_block(sd, f"{prefix}proj_{j}.", chans[j], o, g)
            sd[f"{prefix}up_{j}.weight"] = 0.1 * torch.randn(o, 1, 2 * factors[j], 2 * factors[j], generator=g)
            _deform_conv_block(sd, f"{prefix}node_{j}.", o, o, g)
    _branch(sd, g, wh_head_conv=HC)
    return sd


# ----- functional references computed from THEIR keys ----------------------------------------------------------

def _f_bn(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, sd[prefix + "running_mean"], sd[prefix + "running_var"], sd[prefix + "weight"], sd[prefix + "bias"], False, 0.0, 1e-5)


def _f_dcn(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    om = F.conv2d(x, sd[prefix + "conv_offset_mask.weight"], sd[prefix + "conv_offset_mask.bias"], padding=1)
    o1, o2, mask = torch.chunk(om, 3, dim=1)
    return deform_conv2d(x, torch.cat((o1, o2), 1), sd[prefix + "weight"], sd[prefix + "bias"], padding=(1, 1), mask=torch.sigmoid(mask))


def _f_branch(feats: list[torch.Tensor], sd: dict) -> dict[str, torch.Tensor]:
    def seq(x: torch.Tensor, name: str) -> torch.Tensor:
        x = F.relu(F.conv2d(x, sd[f"branch.{name}.0.weight"], sd[f"branch.{name}.0.bias"], padding=1))
        return F.conv2d(x, sd[f"branch.{name}.2.weight"], sd[f"branch.{name}.2.bias"])

    chunk = torch.cat(feats, dim=1)
    return {"hm": seq(chunk, "hm"), "mov": seq(chunk, "mov"), "wh": torch.cat([seq(f, "wh") for f in feats], dim=1)}


def _f_resnet18(frame: torch.Tensor, sd: dict) -> torch.Tensor:
    body = torchvision.models.resnet18()
    weights = {k[len("backbone."):]: v for k, v in sd.items() if k.startswith(("backbone.conv1", "backbone.bn1", "backbone.layer"))}
    result = body.load_state_dict(weights, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"] and not result.unexpected_keys
    body.eval()
    x = body.maxpool(body.relu(body.bn1(body.conv1(frame))))
    x = body.layer4(body.layer3(body.layer2(body.layer1(x))))
    for s in range(3):
        p = "backbone.deconv_layer.deconv_layers."
        x = F.relu(_f_bn(_f_dcn(x, sd, f"{p}{6 * s}."), sd, f"{p}{6 * s + 1}."))
        x = F.conv_transpose2d(x, sd[f"{p}{6 * s + 3}.weight"], stride=2, padding=1)
        x = F.relu(_f_bn(x, sd, f"{p}{6 * s + 4}."))
    return x


def _f_dla34(frame: torch.Tensor, sd: dict) -> torch.Tensor:
    ref = timm.create_model("dla34", pretrained=False)
    base = {k[len("backbone.base."):]: v for k, v in sd.items() if k.startswith("backbone.base.")}
    result = ref.load_state_dict(base, strict=False)
    assert sorted(result.unexpected_keys) == sorted(k for k in base if k.startswith(("level3.project", "level4.project")))
    ref.eval()
    layers = [ref.base_layer(frame)]
    for i in range(6):
        layers.append(getattr(ref, f"level{i}")(layers[-1]) if i else ref.level0(layers[0]))
    layers = layers[1:]  # level0 .. level5

    def block(x: torch.Tensor, prefix: str) -> torch.Tensor:  # DeformConv: DCN -> BN -> ReLU
        return F.relu(_f_bn(_f_dcn(x, sd, prefix + "conv."), sd, prefix + "actf.0."))

    def ida(prefix: str, ls: list, startp: int, endp: int) -> None:  # their IDAUp.forward, in place
        for i in range(startp + 1, endp):
            j = i - startp
            w = sd[f"{prefix}up_{j}.weight"]
            f = w.shape[-1] // 2
            ls[i] = F.conv_transpose2d(block(ls[i], f"{prefix}proj_{j}."), w, stride=f, padding=f // 2, groups=w.shape[0])
            ls[i] = block(ls[i] + ls[i - 1], f"{prefix}node_{j}.")

    out = [layers[-1]]
    for i in range(3):  # their DLAUp.forward with startp = 2
        ida(f"backbone.dla_up.ida_{i}.", layers, len(layers) - i - 2, len(layers))
        out.insert(0, layers[-1])
    y = [out[j].clone() for j in range(3)]
    ida("backbone.ida_up.", y, 0, 3)
    return y[-1]


@pytest.mark.parametrize(("arch", "backbone", "make", "reference"), [
    ("resnet_18", "resnet18", moc_resnet18_state_dict, _f_resnet18),
    ("dla_34", "dla34", moc_dla34_state_dict, _f_dla34),
])
def test_release_layout_maps_loads_strictly_and_computes_the_same(arch, backbone, make, reference) -> None:
    torch.manual_seed(0)
    theirs = make()
    model = build_moc(SimpleNamespace(name="moc", backbone=backbone, num_classes=C, weights=None, options={"K": K, "head_conv": HC}))
    ours = map_moc_release_state_dict({"module." + k: v for k, v in theirs.items()}, arch)
    load_state_dict_strict(model, ours, source="test")
    model.eval()
    clip = torch.randn(1, K, 3, 64, 64)
    with torch.no_grad():
        got = model._head_outputs(clip)
        feats = [reference(clip[:, k], theirs) for k in range(K)]
        want = _f_branch(feats, theirs)
    assert feats[0].shape == (1, 64, 16, 16)
    torch.testing.assert_close(got.heatmap, want["hm"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.movement, want["mov"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(got.wh, want["wh"], rtol=1e-4, atol=1e-4)
    assert got.heatmap.std() > 1e-3  # the comparison is not between constants


def test_release_file_loading_and_errors(tmp_path) -> None:
    theirs = moc_resnet18_state_dict(seed=1)
    cfg = SimpleNamespace(name="moc", backbone="resnet18", num_classes=C, weights=None, options={"K": K, "head_conv": HC})
    model = build_moc(cfg)
    old = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}  # files of PyTorch < 0.4.1
    torch.save({"epoch": 12, "state_dict": old}, tmp_path / "ucf_resnet18.pth")
    assert load_moc_weights(model, tmp_path / "ucf_resnet18.pth", arch="resnet_18") == "moc_release"
    torch.testing.assert_close(model.head.movement[2].bias, theirs["branch.mov.2.bias"])
    dcn_key = "backbone.deconv_layer.deconv_layers.6.conv_offset_mask.weight"
    torch.testing.assert_close(model.neck.stages[1].conv.offset_mask.weight, theirs[dcn_key])

    torch.save({"model": model.state_dict(), "epoch": 1}, tmp_path / "stad.pt")
    cfg.weights = str(tmp_path / "stad.pt")
    rebuilt = build_moc(cfg)
    torch.testing.assert_close(rebuilt.head.center[0].weight, model.head.center[0].weight)

    plain = build_moc(SimpleNamespace(**{**vars(cfg), "weights": None, "options": {"K": K, "head_conv": HC, "deformable": False}}))
    with pytest.raises(StadError, match="deformable=true"):
        load_state_dict_strict(plain, map_moc_release_state_dict(theirs, "resnet_18"), source="release")
    wrong_k = build_moc(SimpleNamespace(**{**vars(cfg), "weights": None, "options": {"K": 5, "head_conv": HC}}))
    with pytest.raises(StadError, match=r"head.center.0.weight: file \(16, 192, 3, 3\) vs model \(16, 320, 3, 3\)"):
        load_state_dict_strict(wrong_k, map_moc_release_state_dict(theirs, "resnet_18"), source="release")
    with pytest.raises(StadError, match="unexpected key 'backbone.extra.weight'"):
        map_moc_release_state_dict({**theirs, "backbone.extra.weight": torch.zeros(1)}, "resnet_18")
    with pytest.raises(StadError, match="arch must be one of"):
        map_moc_release_state_dict(theirs, "resnet_101")


def test_centernet_coco_weights_fill_all_but_the_center_and_movement_branches(tmp_path) -> None:
    moc = moc_resnet18_state_dict(seed=2)
    coco: dict[str, torch.Tensor] = {}
    for key, value in moc.items():  # CenterNet ctdet resdcn18 layout: no "backbone." prefix, heads hm / wh / reg
        if key.startswith("branch.wh."):
            coco[key[len("branch."):]] = value
        elif key.startswith("backbone.deconv_layer."):
            coco[key[len("backbone.deconv_layer."):]] = value
        elif key.startswith("backbone."):
            coco[key[len("backbone."):]] = value
    coco["hm.0.weight"], coco["hm.2.weight"] = torch.zeros(64, 64, 3, 3), torch.zeros(80, 64, 1, 1)
    coco["reg.0.weight"], coco["reg.2.weight"] = torch.zeros(64, 64, 3, 3), torch.zeros(2, 64, 1, 1)
    torch.save({"epoch": 140, "state_dict": {"module." + k: v for k, v in coco.items()}}, tmp_path / "ctdet_coco_resdcn18.pth")
    model = build_moc(SimpleNamespace(name="moc", backbone="resnet18", num_classes=C, weights=None, options={"K": K, "head_conv": HC}))
    center_before = model.head.center[0].weight.clone()
    left = load_centernet_coco_weights(model, tmp_path / "ctdet_coco_resdcn18.pth", arch="resnet_18")
    assert left and all(k.startswith(("head.center.", "head.movement.")) for k in left)
    torch.testing.assert_close(model.head.center[0].weight, center_before)
    torch.testing.assert_close(model.head.box[2].weight, moc["branch.wh.2.weight"])
    torch.testing.assert_close(model.neck.stages[2].bn2.running_var, moc["backbone.deconv_layer.deconv_layers.16.running_var"])
    torch.testing.assert_close(model.backbone.body.layer3[1].conv2.weight, moc["backbone.layer3.1.conv2.weight"])
    fresh = build_moc(SimpleNamespace(name="moc", backbone="resnet18", num_classes=C, weights=None, options={"K": K, "head_conv": HC}))
    assert load_moc_weights(fresh, tmp_path / "ctdet_coco_resdcn18.pth", arch="resnet_18") == "centernet_coco"
    torch.testing.assert_close(fresh.neck.stages[0].conv.conv.weight, model.neck.stages[0].conv.conv.weight)
