"""Tests for the model zoo: construction, output shapes, MAC counts, and that
every model can be traced and structurally pruned by torch-pruning."""

import pytest
import torch
import torch.nn as nn
import torch_pruning as tp

from ocspruner.models import (attention_num_heads, create_model, default_input_size, get_classifier,
                              list_models)

# torch-pruning warns that the ViT's cls_token / pos_embed are "unwrapped parameters";
# its default (prune their last dim) is exactly what we want.
pytestmark = pytest.mark.filterwarnings("ignore:Unwrapped parameters")

ALL_MODELS = ["attention_block", "mobilenetv2", "mobilenetv2_cifar", "resnet110", "resnet18", "resnet20",
              "resnet32", "resnet50", "resnet56", "tiny_convnet", "vgg16", "vgg19", "vit_tiny_cifar"]
IMAGENET_MODELS = {"resnet18", "resnet50", "mobilenetv2"}


def fast_input_size(name: str) -> int:
    """Input side used in fast tests: 64 for ImageNet models (their 224 is slow on CPU)."""
    return 64 if name in IMAGENET_MODELS else 32


def macs(model: nn.Module, size: int, in_channels: int = 3) -> float:
    model.eval()
    return tp.utils.count_ops_and_params(model, torch.randn(1, in_channels, size, size))[0]


def test_registry_lists_all_models():
    assert list_models() == sorted(ALL_MODELS)


def test_default_input_size():
    for name in ALL_MODELS:
        assert default_input_size(name) == (224 if name in IMAGENET_MODELS else 32)


def test_unknown_model_is_one_line_value_error():
    with pytest.raises(ValueError) as err:
        create_model("resnet57")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == "unknown model 'resnet57'; choose one of: " + ", ".join(sorted(ALL_MODELS))
    with pytest.raises(ValueError, match="unknown model"):
        default_input_size("nope")


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", ALL_MODELS)
def test_build_and_forward(name, in_channels):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_channels=in_channels).eval()
    size = fast_input_size(name)
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()
    fc = get_classifier(model)
    assert model.classifier_name in ("fc", "classifier")
    assert isinstance(fc, nn.Linear) and fc.out_features == 10


def test_num_classes_kwarg():
    assert get_classifier(create_model("resnet20", num_classes=100)).out_features == 100
    assert create_model("vgg16", num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_vit_kwargs():
    model = create_model("vit_tiny_cifar", dim=64, depth=2, num_heads=4, mlp_ratio=4)
    assert len(model.blocks) == 2
    attn = model.blocks[0].attn
    assert (attn.num_heads, attn.head_dim) == (4, 16)
    assert model.blocks[0].mlp.fc1.out_features == 256
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_resnet_depths():
    # n = (depth - 2) / 6 BasicBlocks per stage
    for name, n in [("resnet20", 3), ("resnet32", 5), ("resnet56", 9), ("resnet110", 18)]:
        model = create_model(name)
        assert [len(s) for s in (model.layer1, model.layer2, model.layer3)] == [n, n, n]
    with pytest.raises(ValueError):
        from ocspruner.models.resnet_cifar import CifarResNet
        CifarResNet(21)


def test_vgg_conv_counts():
    for name, convs in [("vgg16", 13), ("vgg19", 16)]:
        model = create_model(name)
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == convs


# MACs measured with tp.utils.count_ops_and_params (10 classes, 3 input channels,
# default input size). torch-pruning also counts BatchNorm/LayerNorm ops, so these
# are slightly above the conv+linear-only numbers quoted in papers
# (ResNet-56 125.7M incl. the option-B shortcuts, VGG-16 313.2M, MobileNetV2 ~300M,
# ResNet-50 4.09G).
EXPECTED_MACS = {
    "resnet56": 127_373_962,
    "vgg16": 314_156_554,
    "vgg19": 399_171_082,
    "mobilenetv2_cifar": 92_779_018,
    "mobilenetv2": 319_031_818,
    "resnet50": 4_119_896_586,
    "resnet18": 1_821_669_898,
    "vit_tiny_cifar": 116_102_026,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_MACS))
def test_mac_counts(name):
    measured = macs(create_model(name), default_input_size(name))
    assert measured == pytest.approx(EXPECTED_MACS[name], rel=0.01)


def test_resnet18_matches_the_published_parameter_count():
    # torchvision's ResNet-18 (1000 classes) has 11,689,512 parameters
    assert sum(p.numel() for p in create_model("resnet18", num_classes=1000).parameters()) == 11_689_512


def test_vgg_width_mult_scales_every_conv():
    convs = [m.out_channels for m in create_model("vgg16", width_mult=0.25).modules() if isinstance(m, nn.Conv2d)]
    assert convs == [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]
    with pytest.raises(ValueError, match="width_mult must be > 0"):
        create_model("vgg16", width_mult=0)


def prune_30(model: nn.Module, size: int, in_channels: int = 3, **pruner_kwargs) -> tp.pruner.MetaPruner:
    example = torch.randn(1, in_channels, size, size)
    pruner = tp.pruner.MetaPruner(
        model, example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.3,
        ignored_layers=[get_classifier(model)],
        num_heads=attention_num_heads(model),  # empty dict for CNNs
        **pruner_kwargs,
    )
    pruner.step()
    return pruner


PRUNE_CASES = [
    ("tiny_convnet", {}),
    ("resnet20", {}),
    ("vgg16", {}),
    ("mobilenetv2_cifar", {}),
    ("attention_block", {}),
    ("vit_tiny_cifar", dict(dim=96, depth=2, num_heads=3)),
]


@pytest.mark.parametrize("name,kwargs", PRUNE_CASES, ids=[c[0] for c in PRUNE_CASES])
def test_trace_and_prune_30_percent(name, kwargs):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, **kwargs)
    size = fast_input_size(name)
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, size, size))
    before = macs(model, size)
    prune_30(model.eval(), size)
    after = macs(model, size)
    # 30% of channels on both sides of most layers removes roughly half the MACs
    assert 0.3 * before < after < 0.75 * before
    model.train()
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    out.sum().backward()  # the pruned model still trains
    assert get_classifier(model).out_features == 10


def test_prune_single_channel_input():
    # Fashion-MNIST-style input (1 channel, 28x28) on the small conv net
    model = create_model("tiny_convnet", in_channels=1)
    prune_30(model.eval(), 28, in_channels=1)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet56", "resnet50", "mobilenetv2", "vgg19"])
def test_trace_other_models(name):
    # every model must be traceable by torch-pruning, not just the ones pruned above
    model = create_model(name).eval()
    size = fast_input_size(name)
    tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, size, size))


def test_vit_head_dims_pruned_evenly():
    model = create_model("attention_block").eval()
    prune_30(model, 32)
    attn = model.block.attn
    assert attn.num_heads == 4
    q_width = attn.qkv.out_features // 3
    assert attn.qkv.out_features % (3 * attn.num_heads) == 0
    assert attn.proj.in_features == q_width < 32


def test_vit_whole_head_pruning():
    model = create_model("attention_block").eval()
    pruner = prune_30(model, 32, prune_num_heads=True, prune_head_dims=False, head_pruning_ratio=0.5)
    attn = model.block.attn
    attn.num_heads = pruner.num_heads[attn.qkv]  # the caller keeps num_heads in sync
    assert attn.num_heads == 2
    assert attn.qkv.out_features == 3 * 2 * attn.head_dim  # head size unchanged
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
