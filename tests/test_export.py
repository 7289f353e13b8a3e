"""Export (issue 7): our format, TorchScript and ONNX round trips of pruned models, each checked
against the PyTorch model; missing packages and bad formats are one-line errors."""
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn as nn

from ocspruner import OCSPruner
from ocspruner.export import ExportError, check_formats, describe, export_model
from ocspruner.models import create_model



MODELS = [("resnet20", {}), ("mobilenetv2_cifar", {"width_mult": 0.25}),
          ("vit_tiny_cifar", {"dim": 48, "depth": 1, "num_heads": 3})]


def _as_if_trained(model: nn.Module) -> None:
    """Random weights and norm statistics of a realistic scale, so that outputs are far from 0 (a
    fresh MobileNetV2 outputs ~1e-15, which any file would match)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=g))
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.1 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) / m.in_features ** 0.5)


def _pruned(name, opts):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, **opts).eval()
    _as_if_trained(model)
    ex = torch.randn(1, 3, 32, 32)
    pruner = OCSPruner(model, ex, target=0.5, max_prune_fraction=0.9, prune_epoch=0, check_structures=False)
    pruner.epoch_start(0)                      # prunes physically at epoch 0
    assert pruner.t_star == 0
    arch = describe(pruner, name, num_classes=5, in_channels=3, image_size=32, model_options=opts)
    return model, ex, arch, pruner


@pytest.mark.parametrize("name,opts", MODELS, ids=[m for m, _ in MODELS])
def test_round_trip_three_formats(tmp_path, name, opts):
    import onnxruntime as ort

    model, ex, arch, pruner = _pruned(name, opts)
    dense_params = sum(g.size for g in pruner.space.groups)
    assert sum(len(v) for v in arch["pruning"]["kept"].values()) < dense_params      # really pruned
    results = export_model(model, ex, str(tmp_path), architecture=arch)
    assert set(results) == {"ocs", "torchscript", "onnx"}
    for fmt, r in results.items():
        assert r["ok"] and r["max_abs_diff"] <= 1e-4, (fmt, r)
        assert r["max_abs_output"] > 0.01, (fmt, r)      # a real output, not ~1e-15
        assert r["check_batch"] == 3                      # another batch size than the example's
    # independent checks of each file at yet another batch size
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        ref = model.eval()(x)
    blob = torch.load(results["ocs"]["path"], weights_only=True)          # plain tensors + Python values
    assert blob["architecture"] == arch
    import ocspruner
    with torch.no_grad():
        assert torch.equal(ocspruner.load(results["ocs"]["path"])(x), ref)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)     # torch marks TorchScript deprecated
            scripted = torch.jit.load(results["torchscript"]["path"])
        assert (scripted(x) - ref).abs().max() <= 1e-5
    sess = ort.InferenceSession(results["onnx"]["path"], providers=["CPUExecutionProvider"])
    out = sess.run(None, {"input": x.numpy()})[0]
    assert out.shape == (5, 5) and abs(out - ref.numpy()).max() <= 1e-4


def test_our_format_loads_without_training_code(tmp_path):
    """ocspruner.load needs neither the trainer, the data package nor the methods."""
    model, ex, arch, _ = _pruned("resnet20", {})
    export_model(model, ex, str(tmp_path), formats=("ocs",), architecture=arch)
    x = torch.randn(2, 3, 32, 32)
    torch.save({"x": x, "y": model(x).detach()}, tmp_path / "io.pt")
    code = ("import sys, torch, ocspruner\n"
            f"m = ocspruner.load({str(tmp_path / 'model.pt')!r})\n"
            f"io = torch.load({str(tmp_path / 'io.pt')!r}, weights_only=True)\n"
            "assert torch.equal(m(io['x']), io['y'])\n"
            "loaded = [n for n in ('ocspruner.trainer', 'ocspruner.data', 'ocspruner.methods') if n in sys.modules]\n"
            "print('LOADED', loaded)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(os.path.dirname(__file__)),
                                                         os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "LOADED []" in out.stdout


class BatchDependent(nn.Module):
    """Python control flow on the batch size: tracing freezes the branch of the example batch."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        y = self.fc(x.flatten(1))
        return y * 2.0 if x.shape[0] == 1 else y


def test_parity_check_catches_a_wrong_graph(tmp_path):
    results = export_model(BatchDependent(), torch.randn(1, 3, 2, 2), str(tmp_path), formats=("torchscript", "onnx"))
    for fmt in ("torchscript", "onnx"):
        assert not results[fmt]["ok"] and results[fmt]["max_abs_diff"] > 1e-3, results[fmt]


def test_ocs_format_needs_architecture(tmp_path):
    with pytest.raises(ExportError, match="needs the architecture description"):
        export_model(BatchDependent(), torch.randn(1, 3, 2, 2), str(tmp_path), formats=("ocs",))


def test_unknown_format_and_missing_onnx_are_one_line_errors(monkeypatch):
    with pytest.raises(ExportError, match="unknown export format 'tflite'"):
        check_formats(["tflite"])
    monkeypatch.setitem(sys.modules, "onnxruntime", None)          # as if not installed
    with pytest.raises(ExportError, match=r"needs the 'onnxruntime' package: pip install 'ocspruner\[export\]'"):
        check_formats(["torchscript", "onnx"])
    from ocspruner.config import ConfigError, load_config
    with pytest.raises(ConfigError, match="export: ONNX export needs"):       # before any training
        load_config(None, updates={"export": ["onnx"]})
    assert check_formats(["ocs", "torchscript"]) == ("ocs", "torchscript")
