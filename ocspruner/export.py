"""Export a (pruned) model for deployment, each format checked against the PyTorch model.

Formats:

* ``ocs`` -- ours: ``{"architecture": ..., "state_dict": ...}`` of plain tensors and Python
  values (loads with ``torch.load(..., weights_only=True)``). ``ocspruner.load(path)`` rebuilds
  the pruned model from it: a fresh model from the registry, the recorded prune replayed, the
  tensors loaded. Needs ocspruner and torch-pruning, not the training code (no Trainer, data or
  method objects are imported).
* ``torchscript`` -- ``torch.jit.trace``; loads with ``torch.jit.load`` and needs only torch.
* ``onnx`` -- ``torch.onnx.export`` (the TorchScript-based exporter where this torch still has
  it: it is ~20x faster here and takes ``dynamic_axes``; the torch.export-based one otherwise),
  batch dimension dynamic. Needs the ``onnx`` and ``onnxruntime`` packages
  (``pip install 'ocspruner[export]'``).

Every format is loaded back and run on a fresh random batch (of another size than the example, so
a batch size frozen into a graph shows up); the largest absolute difference to the PyTorch model
is reported, and the export is ``ok`` when it is at most ``atol`` (1e-4 by default).
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import warnings
from typing import Optional, Sequence

import torch
import torch.nn as nn

FORMATS = ("ocs", "torchscript", "onnx")
FILE_NAMES = {"ocs": "model.pt", "torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
INSTALL_HINT = "pip install 'ocspruner[export]' (or: pip install onnx onnxruntime onnxscript)"


class ExportError(ValueError):
    """A format that cannot be exported (unknown name, missing package, missing architecture)."""


def check_formats(formats: Sequence[str]) -> tuple:
    """Validate format names and that the packages they need are importable (fail before work)."""
    formats = tuple(formats)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown export format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    if "onnx" in formats:
        _require_onnx()
    return formats


def onnx_missing() -> Optional[str]:
    """None when ONNX export can run here; otherwise one line saying what to install."""
    try:
        _require_onnx()
    except ExportError as exc:
        return str(exc)
    return None


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ExportError(f"ONNX export needs the '{exc.name}' package: {INSTALL_HINT}") from None
    return onnx, onnxruntime


def describe(pruner, model_name: str, *, num_classes: int, in_channels: int, image_size: int,
             model_options: Optional[dict] = None) -> dict:
    """The architecture description of a registry model pruned by ``pruner`` (an OCSPruner,
    after t*), as a run's ``final_model.pt`` holds it: what :func:`ocspruner.load` needs."""
    keep = pruner.final_keep if pruner.final_keep is not None else \
        torch.ones(pruner.space.num_channels, dtype=torch.bool)
    space = pruner.space
    return {"model": model_name, "model_options": dict(model_options or {}), "num_classes": num_classes,
            "in_channels": in_channels, "image_size": image_size,
            "pruning": {"groups": [[g.key, g.size] for g in space.groups],
                        "kept": {k: sorted(v) for k, v in space.subnetwork(keep).items()}}}


def _max_diff(a: torch.Tensor, b) -> float:
    b = torch.as_tensor(b)
    if tuple(a.shape) != tuple(b.shape):
        return float("inf")
    return float((a.detach().float().cpu() - b.float().cpu()).abs().max())


@contextlib.contextmanager
def _quiet():
    # torch marks TorchScript and its ONNX exporter deprecated; the warnings say nothing about
    # this model, and the parity check below is what tells whether the file is right
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def _export_ocs(model, architecture, path, x, ref) -> dict:
    from .io import load
    from .rundir import atomic_torch_save

    if architecture is None:
        raise ExportError("the 'ocs' format needs the architecture description (model name, options, kept "
                          "channels): pass architecture=ocspruner.export.describe(pruner, ...) or export a run "
                          "directory; or choose formats torchscript/onnx")
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_torch_save({"architecture": architecture, "state_dict": state}, path)
    rebuilt = load(path)
    with torch.no_grad():
        return {"max_abs_diff": _max_diff(ref, rebuilt(x))}


def _export_torchscript(model, path, example, x, ref) -> dict:
    with _quiet(), torch.no_grad():
        traced = torch.jit.trace(model, example, check_trace=False)
        torch.jit.save(traced, path)
        loaded = torch.jit.load(path, map_location="cpu")
        return {"max_abs_diff": _max_diff(ref, loaded(x))}


def _export_onnx(model, path, example, x, ref, opset: int) -> dict:
    _, ort = _require_onnx()
    import onnx

    names = {"input_names": ["input"], "output_names": ["output"]}
    exporter = "torchscript"
    with _quiet():
        try:
            torch.onnx.export(model, (example,), path, dynamo=False, opset_version=opset,
                              dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}}, **names)
        except (TypeError, RuntimeError, AttributeError) as legacy_error:
            # a torch without the TorchScript-based exporter: the torch.export-based one
            exporter = "dynamo"
            try:
                torch.onnx.export(model, (example,), path, dynamo=True, external_data=False,
                                  dynamic_shapes=({0: torch.export.Dim("batch")},), **names)
            except ImportError as exc:
                raise ExportError(f"ONNX export with torch.export needs the '{exc.name}' package: {INSTALL_HINT}") from None
            except Exception as exc:  # noqa: BLE001 - report both exporters' reasons in one line
                first = (str(legacy_error).strip().splitlines() or [""])[0][:100]
                raise ExportError(f"ONNX export failed ({first}; then {type(exc).__name__}: "
                                  f"{(str(exc).strip().splitlines() or [''])[0][:100]})") from None
    onnx.checker.check_model(onnx.load(path))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    return {"max_abs_diff": _max_diff(ref, out), "exporter": exporter, "opset": opset,
            "onnxruntime": ort.__version__}


def export_model(model: nn.Module, example_inputs: torch.Tensor, out_dir: str,
                 formats: Sequence[str] = FORMATS, architecture: Optional[dict] = None,
                 atol: float = 1e-4, check_batch: Optional[int] = None, opset: int = 17) -> dict:
    """Write ``model`` in each of ``formats`` into ``out_dir`` and check each file.

    ``example_inputs`` is one input tensor (N, C, H, W); the model is exported on CPU in eval mode
    (a copy: ``model`` itself is not touched). Returns ``{format: {"path", "max_abs_diff", "ok",
    ...}}``, checked on a random batch of ``check_batch`` examples (default: example batch + 2).
    """
    formats = check_formats(formats)
    if not isinstance(example_inputs, torch.Tensor):
        raise ExportError("example_inputs must be one tensor (N, C, H, W); models with several inputs "
                          "are not supported by the export command")
    os.makedirs(out_dir, exist_ok=True)
    net = copy.deepcopy(model).cpu().float().eval()
    example = example_inputs.detach().cpu().float()
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((check_batch or example.shape[0] + 2, *example.shape[1:]), generator=gen)
    with torch.no_grad():
        ref = net(x)
    results = {}
    for fmt in formats:
        path = os.path.join(out_dir, FILE_NAMES[fmt])
        if fmt == "ocs":
            res = _export_ocs(net, architecture, path, x, ref)
        elif fmt == "torchscript":
            res = _export_torchscript(net, path, example, x, ref)
        else:
            res = _export_onnx(net, path, example, x, ref, opset)
        # the output's own scale, so that a tiny difference can be told from a tiny output
        res = {"path": path, **res, "max_abs_output": float(ref.abs().max()), "check_batch": int(x.shape[0]),
               "ok": res["max_abs_diff"] <= atol, "atol": atol}
        res["bytes"] = os.path.getsize(path)
        results[fmt] = res
    return results


def export_run(run_dir: str, formats: Sequence[str] = FORMATS, out_dir: Optional[str] = None,
               atol: float = 1e-4, batch: int = 1) -> dict:
    """Export the final model of a run directory (``final_model.pt``) into ``run_dir/export``
    (or ``out_dir``), write ``export.json`` there, and return the results. The run directory is
    locked meanwhile (a run writing it is not read half-way)."""
    from .io import CheckpointError, load, read_checkpoint
    from .rundir import RunDir, atomic_write_text

    rd = RunDir.finished(run_dir)
    formats = check_formats(formats)
    with rd.writing():
        path = rd.file(RunDir.FINAL_MODEL)
        arch = read_checkpoint(path).get("architecture")
        if not isinstance(arch, dict) or not isinstance(arch.get("image_size"), int) \
                or not isinstance(arch.get("in_channels"), int):
            raise CheckpointError(f"{path!r} has no valid architecture description (image_size, in_channels); "
                                  f"pass a run's final_model.pt")
        model = load(path)
        size = arch["image_size"]
        example = torch.randn(batch, arch["in_channels"], size, size, generator=torch.Generator().manual_seed(1))
        out_dir = out_dir or rd.file(RunDir.EXPORT)
        results = export_model(model, example, out_dir, formats, architecture=arch, atol=atol)
        for r in results.values():   # export.json names its files relative to itself
            r["file"] = os.path.relpath(os.path.abspath(r["path"]), os.path.abspath(out_dir))
        atomic_write_text(os.path.join(out_dir, "export.json"),
                          json.dumps({"source": os.path.relpath(os.path.abspath(path), os.path.abspath(out_dir)),
                                      "input_shape": list(example.shape[1:]), "torch": torch.__version__,
                                      "formats": results}, indent=1))
    return results


def format_results(results: dict) -> str:
    lines = [f"{'format':<12} {'max |diff|':>11}  {'ok':<4} file"]
    for fmt, r in results.items():
        lines.append(f"{fmt:<12} {r['max_abs_diff']:>11.2e}  {'yes' if r['ok'] else 'NO':<4} {r['path']}")
    return "\n".join(lines)


__all__ = ["export_model", "export_run", "describe", "check_formats", "onnx_missing", "ExportError", "FORMATS"]
