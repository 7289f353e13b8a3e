"""Run configuration: typed dataclasses, YAML files and ``a.b=value`` overrides.

Every key is checked: an unknown key or a value of the wrong type is a one-line ConfigError that
names the key and the fix. Configs are data (YAML under ``configs/``), as in timm.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Optional

import yaml

from .engine import OCSConfig


class ConfigError(ValueError):
    """A bad configuration value or key."""


@dataclass
class DataConfig:
    name: str = "digits"
    root: Optional[str] = None
    subset: Optional[int] = None         # limit the training examples (quick runs)
    val_fraction: float = 0.1            # carved from the TRAINING set; the test set is only reported
    batch_size: int = 128
    workers: int = 0
    image_size: Optional[int] = None
    augment: bool = True
    options: dict = field(default_factory=dict)   # dataset-specific keyword arguments


@dataclass
class OptimConfig:
    name: str = "sgd"                    # sgd | adamw
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4


@dataclass
class ScheduleConfig:
    name: str = "cosine"                 # cosine | multistep | step | linear | constant
    milestones: list = field(default_factory=list)   # epochs, for multistep
    gamma: float = 0.2                   # multistep / step factor
    step_size: int = 30                  # step
    warmup_epochs: float = 0.0
    min_lr: float = 0.0                  # cosine / linear floor


@dataclass
class RunConfig:
    model: str = "resnet20"
    model_options: dict = field(default_factory=dict)
    init_from: Optional[str] = None      # pre-trained start: a state_dict or one of our checkpoints
    method: str = "ocspruner"
    epochs: int = 30
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    pruning: OCSConfig = field(default_factory=OCSConfig)
    method_options: dict = field(default_factory=dict)   # options of non-OCSPruner methods
    ignored_layers: list = field(default_factory=list)   # module names or type names no method may prune
    recovery_fraction: float = 0.2       # every method trains >= this fraction of its cycle (>= 1 epoch) after its prune
    label_smoothing: float = 0.0
    bn_recalibration: int = 5            # training batches to re-estimate BatchNorm statistics before each evaluation (0: off)
    amp: Optional[str] = None            # None | bf16 | fp16 (GPU)
    channels_last: bool = False
    compile: Optional[str] = None        # torch.compile backend for the training forward (e.g. inductor)
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    threads: Optional[int] = None        # torch CPU threads
    out_dir: str = "runs"
    name: Optional[str] = None           # run directory name (default: model-dataset-method-time)
    checkpoint_every: int = 1
    keep_checkpoints: int = 2
    progress: bool = True
    export: list = field(default_factory=list)   # formats written at the end: ocs, torchscript, onnx

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_type(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(value, args[0], key)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is bool and isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    if (tp is list or origin is list) and isinstance(value, list):
        return value
    if (tp is dict or origin is dict) and isinstance(value, dict):
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"config key '{key}' expects {name}, got {value!r} ({type(value).__name__})")


def _build(cls, data: dict, prefix: str = ""):
    if not isinstance(data, dict):
        raise ConfigError(f"config section '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in data.items():
        full = prefix + str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(names)}"
            raise ConfigError(f"unknown config key '{full}'{hint}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value, full + ".")
        else:
            kwargs[key] = _check_type(value, tp, full)
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"cannot set '{dotted}': '{p}' is not a section")
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value (e.g. pruning.target=0.4)")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else None
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: Optional[str] = None, overrides: Optional[list] = None,
                updates: Optional[dict] = None) -> RunConfig:
    """Defaults <- YAML file <- ``updates`` (dotted keys) <- ``overrides`` ("a.b=value" strings)."""
    tree: dict = {}
    if path is not None:
        path = resolve_config_path(path)
        try:
            with open(path) as fh:
                tree = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(tree).__name__}")
    for key, value in (updates or {}).items():
        _set_dotted(tree, key, value)
    for text in overrides or []:
        _set_dotted(tree, *parse_override(text))
    cfg = _build(RunConfig, tree)
    try:
        cfg.pruning.validate()
    except ValueError as exc:
        raise ConfigError(f"pruning: {exc}") from None
    _validate_run(cfg)
    return cfg


def _validate_run(cfg: RunConfig) -> None:
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.data.batch_size < 1:
        raise ConfigError(f"data.batch_size must be >= 1, got {cfg.data.batch_size}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"optim.lr must be > 0, got {cfg.optim.lr}")
    if cfg.compile is not None:
        import torch._dynamo
        if cfg.compile not in torch._dynamo.list_backends(exclude_tags=()):
            raise ConfigError(f"compile must be null or a torch.compile backend "
                              f"({', '.join(torch._dynamo.list_backends())}), got {cfg.compile!r}")
    if cfg.amp not in (None, "bf16", "fp16"):
        raise ConfigError(f"amp must be null, 'bf16' or 'fp16', got {cfg.amp!r}")
    if not 0.0 <= cfg.recovery_fraction < 1.0:
        raise ConfigError(f"recovery_fraction must be in [0, 1) (the share of the cycle left to recover after the "
                          f"prune), got {cfg.recovery_fraction}")
    if any(not isinstance(x, str) or not x for x in cfg.ignored_layers):
        raise ConfigError(f"ignored_layers must be a list of module names or type names, got {cfg.ignored_layers!r}")
    if cfg.keep_checkpoints < 1:
        raise ConfigError(f"keep_checkpoints must be >= 1, got {cfg.keep_checkpoints}")
    if cfg.checkpoint_every < 1:
        raise ConfigError(f"checkpoint_every must be >= 1 (epochs between checkpoints), got {cfg.checkpoint_every}")
    if cfg.threads is not None and cfg.threads < 1:
        raise ConfigError(f"threads must be >= 1 (or null for torch's default), got {cfg.threads}")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), e.g. 0.1, got {cfg.label_smoothing}")
    if cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be >= 0, got {cfg.data.workers}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    if cfg.data.subset is not None and cfg.data.subset < 1:
        raise ConfigError(f"data.subset must be >= 1 (or null for all examples), got {cfg.data.subset}")
    if cfg.bn_recalibration < 0:
        raise ConfigError(f"bn_recalibration must be >= 0 (training batches; 0 = off), got {cfg.bn_recalibration}")
    _validate_device(cfg.device)
    _validate_method(cfg.method)
    if cfg.model_options:
        _validate_model_options(cfg.model, cfg.model_options)
    if cfg.export:   # a missing onnx package fails now, not after the training
        from .export import check_formats
        try:
            check_formats(cfg.export)
        except ValueError as exc:
            raise ConfigError(f"export: {exc}") from None


def _validate_device(name: str) -> None:
    import torch

    if name == "auto":
        return
    try:
        torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}") from None


def _validate_method(name: str) -> None:
    from .methods import list_methods

    if name not in list_methods():
        raise ConfigError(f"unknown method {name!r}; choose one of: {', '.join(list_methods())}")


def _validate_model_options(model: str, options: dict) -> None:
    """Unknown model_options keys fail here, not inside the model's constructor after the data loaded."""
    import inspect

    from .models.registry import _MODELS

    if model not in _MODELS:
        return   # an unknown model name is reported by the model registry, in one line
    params = inspect.signature(_MODELS[model]).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        try:   # options passed through **kwargs: the constructor itself is the only judge
            from .models import create_model
            create_model(model, **options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model_options for {model}: {str(exc).splitlines()[0]}") from None
        return
    valid = [n for n in params if n not in ("num_classes", "in_channels")]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise ConfigError(f"unknown model_options key {unknown[0]!r} for model {model}; valid keys: "
                          f"{', '.join(valid) or 'none'}")


CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


def resolve_config_path(path: str) -> str:
    """A path, or the name of a shipped config (``cpu_default``, ``cifar10_resnet56``, ...)."""
    if os.path.isfile(path):
        return path
    shipped = os.path.join(CONFIG_DIR, path if path.endswith(".yaml") else path + ".yaml")
    if os.path.isfile(shipped):
        return shipped
    names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml")) if os.path.isdir(CONFIG_DIR) else []
    raise ConfigError(f"config file {path!r} not found; give a path or one of the shipped configs: {', '.join(names)}")
