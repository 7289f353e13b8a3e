"""build_datasets(name, root, ...) -> DataBundle.

Each builder (``sources.py``) reads one source into a Source: the full training
pool and the official test set (no transforms yet), plus the facts the model
needs (classes, channels, size, normalisation); the examples are held as in
``storage.py``. build_datasets then does the parts that are the same for all of
them:

  * carve a seeded, stratified validation split out of the TRAINING pool
    (val uses eval transforms); the test set is only ever used for reporting,
    so model selection / pruning decisions never see it;
  * optionally keep a seeded, stratified `subset` of the remaining training
    examples for quick runs (val and test are left as they are);
  * attach train (augmenting) and eval transforms.

Splits are views (index lists) over shared storage, so nothing is copied.
"""

import inspect
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from . import transforms as T
from .errors import DataError
from .sources import COMMON_OPTIONS, DATASETS, available_datasets, canonical_name  # noqa: F401 (the registry, re-exported)
from .splits import fraction_count, split_off, stratified_pick  # noqa: F401
from .storage import ArrayDataset, ImageFolderDataset  # noqa: F401


@dataclass
class DataBundle:
    """Everything a trainer needs about one dataset."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple
    name: str
    classes: tuple = field(default=())

    def summary(self):
        """One line for logs."""
        return (
            f"{self.name}: train {len(self.train)} / val {len(self.val)} / test {len(self.test)}, "
            f"{self.num_classes} classes, {self.in_channels}x{self.image_size}x{self.image_size}"
        )


def _builder_options(fn):
    """The per-dataset keyword options a builder accepts."""
    return [n for n in inspect.signature(fn).parameters if n not in ("root", "image_size")]


def _check_stats(name, what, values, channels):
    if values is None:
        return None
    try:
        values = tuple(float(v) for v in (values if hasattr(values, "__iter__") else [values]))
    except (TypeError, ValueError):
        raise DataError(f"{name}: {what} must be a number or a list of {channels} numbers, got {values!r}")
    if len(values) == 1 and channels > 1:
        values = values * channels
    if len(values) != channels:
        raise DataError(f"{name}: {what} has {len(values)} values but the images have {channels} channels")
    if what == "std" and any(v <= 0 for v in values):
        raise DataError(f"{name}: std values must be positive, got {values}")
    return values


def build_datasets(name, root=None, *, val_fraction=0.1, seed=0, subset=None, image_size=None, augment=True, **kw):
    """Build train / val / test datasets for `name` (see DATASETS).

    val_fraction: share of the training pool held out (stratified, seeded) as
        the validation set, with eval transforms; in [0, 1).
    seed: picks the val split and the subset, and seeds the train view's
        augmentation generator (build_loaders reseeds it).
    subset: keep only this many training examples (stratified, seeded), after
        the val split is carved, for quick runs. val and test are unchanged.
    image_size: output side length; default per dataset (32, 224 for folders).
    augment: random crop (+ flip) on train; False uses eval transforms.
    kw: hflip / mean / std overrides, plus per-dataset options
        (digits: test_fraction; cifar100: label_mode; imagefolder: min_scale;
        synthetic: num_samples, num_test, num_classes, in_channels, noise, data_seed).
    """
    key = canonical_name(name)
    builder = DATASETS[key]
    allowed = _builder_options(builder)
    unknown = sorted(set(kw) - set(allowed) - set(COMMON_OPTIONS))
    if unknown:
        valid = ", ".join(list(COMMON_OPTIONS) + allowed)
        raise DataError(f"unknown option(s) {', '.join(unknown)} for dataset {key}; valid options: {valid}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction!r}; e.g. 0.1 holds out 10% of the training set")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int) or subset < 1):
        raise DataError(f"subset must be a positive integer (number of training examples) or None, got {subset!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise DataError(f"image_size must be a positive integer, got {image_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise DataError(f"seed must be an integer, got {seed!r}")

    src = builder(root, image_size, **{k: v for k, v in kw.items() if k in allowed})

    mean = _check_stats(key, "mean", kw.get("mean"), src.in_channels) or tuple(src.mean)
    std = _check_stats(key, "std", kw.get("std"), src.in_channels) or tuple(src.std)
    hflip = src.hflip if kw.get("hflip") is None else bool(kw["hflip"])
    if src.kind == "pil":
        eval_tf = T.pil_eval_transform(src.image_size, mean, std)
        train_tf = T.pil_train_transform(src.image_size, mean, std, hflip, src.min_scale) if augment else eval_tf
    else:
        eval_tf = T.tensor_eval_transform(mean, std)
        train_tf = T.tensor_train_transform(src.image_size, mean, std, hflip) if augment and src.can_augment else eval_tf

    n = len(src.train)
    if n == 0:
        raise DataError(f"{key}: the training set is empty; check the data directory")
    g = torch.Generator().manual_seed(seed)
    n_val = fraction_count(val_fraction, n)
    if n_val >= n:
        raise DataError(f"val_fraction={val_fraction} leaves no training examples out of {n} in {key}; use a smaller val_fraction")
    train_pos, val_pos = split_off(src.train.targets, n_val, g)
    if subset is not None:
        if subset > len(train_pos):
            raise DataError(
                f"subset={subset} is larger than the {len(train_pos)} training examples of {key} "
                f"(after holding out {n_val} for validation); pass a smaller subset or none"
            )
        keep = stratified_pick(src.train.targets[train_pos], subset, g)
        train_pos = train_pos[keep]

    return DataBundle(
        train=src.train.view(train_pos, train_tf, seed),
        val=src.train.view(val_pos, eval_tf, seed),
        test=src.test.view(None, eval_tf, seed),
        num_classes=src.num_classes,
        in_channels=src.in_channels,
        image_size=src.image_size,
        mean=mean,
        std=std,
        name=key,
        classes=tuple(src.classes),
    )
