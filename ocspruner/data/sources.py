"""Where each dataset comes from: one builder per source reads its files (or makes its
examples) into a Source: the full training pool and the official test set, no transforms yet,
plus what the model needs (classes, channels, size, normalisation). The registry (DATASETS,
ALIASES) names them; ``datasets.build_datasets`` turns a Source into splits."""

import collections
import functools
import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from . import formats
from .errors import DataError
from .splits import fraction_count, split_off
from .storage import ArrayDataset, ImageFolderDataset


@dataclass
class Source:
    train: Dataset  # full training pool, no transform
    test: Dataset
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple
    std: tuple
    kind: str  # "tensor": in-memory CHW; "pil": lazily loaded files
    hflip: bool  # default for random horizontal flip when augmenting
    classes: tuple = ()
    can_augment: bool = True
    min_scale: float = 0.08  # random-resized-crop lower area bound ("pil" only)


DIGITS_MEAN, DIGITS_STD = (0.3053,), (0.3236,)  # of the 32x32 upsampled images
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
FASHION_DEFAULT_ROOT = "/usr/share/datasets/fashion-mnist"  # Debian package dataset-fashion-mnist

ROOT_HINTS = {
    "fashion_mnist": "install it with `sudo apt-get install dataset-fashion-mnist` or pass --data-root DIR holding the idx files",
    "mnist": "pass --data-root DIR holding train-images-idx3-ubyte(.gz), train-labels-idx1-ubyte(.gz), t10k-images-idx3-ubyte(.gz), t10k-labels-idx1-ubyte(.gz)",
    "cifar10": "pass --data-root pointing at the extracted cifar-10-batches-py folder or its parent (cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)",
    "cifar100": "pass --data-root pointing at the extracted cifar-100-python folder or its parent (cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html)",
    "imagefolder": "pass --data-root DIR containing train/<class>/*.jpg and val/<class>/*.jpg",
}


def resolve_root(name, root, default=None):
    """The data directory as an absolute path, or a DataError saying which
    path is missing and how to provide it."""
    if root is None or str(root) == "":
        root = default
    if root is None:
        raise DataError(f"{name} needs a data directory; {ROOT_HINTS[name]}")
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.exists(root):
        raise DataError(f"{name} data directory not found: {root}; {ROOT_HINTS[name]}")
    if not os.path.isdir(root):
        raise DataError(f"{name} data root {root} is a file, not a directory; {ROOT_HINTS[name]}")
    return root


def fit_size(images, size):
    """Bring (N,C,H,W) images to size x size at load time: zero-pad centred when
    growing (28->32 keeps digits pixel-exact), bilinear resize when shrinking.
    Keeps the dtype (uint8 results are rounded)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if size >= h and size >= w:
        top, left = (size - h) // 2, (size - w) // 2
        return F.pad(images, (left, size - w - left, top, size - h - top))
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    if images.dtype == torch.uint8:
        out = out.round().clamp_(0, 255).to(torch.uint8)
    return out


@functools.lru_cache(maxsize=1)
def _load_digits_arrays():
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("the digits dataset needs scikit-learn; install it with `pip install scikit-learn`")
    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0  # values 0..16 -> [0,1]
    return images, torch.tensor(d.target, dtype=torch.long)


DIGITS_TEST_SEED = 0


def build_digits(root, image_size, test_fraction=0.2):
    """sklearn's 8x8 handwritten digits (1797 images, 10 classes), bundled with
    scikit-learn so it needs no download: the zero-setup default.

    Upsampled once (bilinear) to image_size (default 32) so CIFAR-style nets
    apply. It has no official test split, so a stratified test split
    (test_fraction, default 20%) is carved with a FIXED seed: the test set is
    the same for every run seed, keeping reported numbers comparable; the val
    split is then carved from the rest with the run seed. `root` is ignored.
    """
    if not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise DataError(f"digits test_fraction must be in (0, 1), got {test_fraction!r}")
    size = image_size or 32
    images, labels = _load_digits_arrays()
    if size != images.shape[-1]:
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(DIGITS_TEST_SEED)
    rest, test = split_off(labels, fraction_count(test_fraction, len(labels)), g)
    classes = tuple(str(i) for i in range(10))
    full = ArrayDataset(images, labels, classes=classes)
    return Source(full.view(rest), full.view(test), 10, 1, size, DIGITS_MEAN, DIGITS_STD, "tensor", False, classes)


def _build_idx(name, root, image_size, default_root, subdir, mean, std, hflip, classes):
    root = resolve_root(name, root, default_root)
    # also accept torchvision's layout: root/raw or root/<MNIST|FashionMNIST>/raw
    dirs = [root, os.path.join(root, "raw"), os.path.join(root, subdir, "raw")]
    xtr, ytr = formats.read_idx_pair(dirs, "train", name, 10)
    xte, yte = formats.read_idx_pair(dirs, "t10k", name, 10)
    size = image_size or 32  # pad 28 -> 32 so CIFAR-style nets apply unchanged
    xtr, xte = fit_size(xtr, size), fit_size(xte, size)
    train = ArrayDataset(xtr, ytr, classes=classes)
    test = ArrayDataset(xte, yte, classes=classes)
    return Source(train, test, 10, 1, size, mean, std, "tensor", hflip, classes)


def build_fashion_mnist(root, image_size):
    """Fashion-MNIST idx files; default root is where Debian's
    dataset-fashion-mnist package puts them (train-images-idx3-ubyte.gz, ...).
    Horizontal flips are on by default (clothes are left/right symmetric)."""
    return _build_idx("fashion_mnist", root, image_size, FASHION_DEFAULT_ROOT, "FashionMNIST",
                      FASHION_MEAN, FASHION_STD, True, FASHION_CLASSES)


def build_mnist(root, image_size):
    """MNIST idx files. No flips by default (a mirrored digit is another glyph)."""
    return _build_idx("mnist", root, image_size, None, "MNIST", MNIST_MEAN, MNIST_STD, False,
                      tuple(str(i) for i in range(10)))


def _cifar_dir(root, files, subdir):
    """Accept either the extracted batches folder or its parent."""
    if any(os.path.isfile(os.path.join(root, f)) for f in files):
        return root
    if os.path.isdir(os.path.join(root, subdir)):
        return os.path.join(root, subdir)
    return root


def _require_files(name, d, files):
    for f in files:
        if not os.path.isfile(os.path.join(d, f)):
            raise DataError(f"{name}: missing file {f} in {d}; {ROOT_HINTS[name]}")


def _load_cifar(name, d, train_files, test_file, label_key, num_classes):
    parts = [formats.read_cifar_batch(os.path.join(d, f), label_key, num_classes) for f in train_files]
    xtr = torch.cat([p[0] for p in parts])
    ytr = torch.cat([p[1] for p in parts])
    xte, yte = formats.read_cifar_batch(os.path.join(d, test_file), label_key, num_classes)
    for x, f in ((xtr, "training batches"), (xte, test_file)):
        if len(x) == 0:
            raise DataError(f"{name}: {f} in {d} hold no images (empty dataset); re-extract the archive")
    return xtr, ytr, xte, yte


def build_cifar10(root, image_size):
    """CIFAR-10 python version: data_batch_1..5 + test_batch (+ batches.meta for names)."""
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    d = _cifar_dir(resolve_root("cifar10", root), train_files + ["test_batch"], "cifar-10-batches-py")
    _require_files("cifar10", d, train_files + ["test_batch"])
    xtr, ytr, xte, yte = _load_cifar("cifar10", d, train_files, "test_batch", "labels", 10)
    names = formats.read_cifar_names(os.path.join(d, "batches.meta"), "label_names")
    classes = tuple(names) if names and len(names) == 10 else tuple(str(i) for i in range(10))
    return _cifar_source(xtr, ytr, xte, yte, 10, image_size, CIFAR10_MEAN, CIFAR10_STD, classes)


def build_cifar100(root, image_size, label_mode="fine"):
    """CIFAR-100 python version: train + test (+ meta). label_mode='coarse'
    gives the 20 superclasses instead of the 100 fine classes."""
    if label_mode not in ("fine", "coarse"):
        raise DataError(f"cifar100 label_mode must be 'fine' or 'coarse', got {label_mode!r}")
    d = _cifar_dir(resolve_root("cifar100", root), ["train", "test"], "cifar-100-python")
    _require_files("cifar100", d, ["train", "test"])
    num_classes = 100 if label_mode == "fine" else 20
    xtr, ytr, xte, yte = _load_cifar("cifar100", d, ["train"], "test", f"{label_mode}_labels", num_classes)
    names = formats.read_cifar_names(os.path.join(d, "meta"), f"{label_mode}_label_names")
    classes = tuple(names) if names and len(names) == num_classes else tuple(str(i) for i in range(num_classes))
    return _cifar_source(xtr, ytr, xte, yte, num_classes, image_size, CIFAR100_MEAN, CIFAR100_STD, classes)


def _cifar_source(xtr, ytr, xte, yte, num_classes, image_size, mean, std, classes):
    size = image_size or 32
    xtr, xte = fit_size(xtr, size), fit_size(xte, size)
    train = ArrayDataset(xtr, ytr, classes=classes)
    test = ArrayDataset(xte, yte, classes=classes)
    return Source(train, test, num_classes, 3, size, mean, std, "tensor", True, classes)


def build_imagefolder(root, image_size, min_scale=0.08):
    """root/train/<class>/*.jpg|png|... and root/val/<class>/... (root/test
    accepted instead of val), e.g. ImageNet. Files are decoded lazily.
    Classes are the sorted folder names under train/. The official val folder
    is our test set; our val split is carved from train."""
    if not isinstance(min_scale, (int, float)) or not 0 < min_scale <= 1:
        raise DataError(f"imagefolder min_scale must be in (0, 1], got {min_scale!r}")
    root = resolve_root("imagefolder", root)
    train_dir = os.path.join(root, "train")
    if not os.path.isdir(train_dir):
        raise DataError(f"imagefolder: missing folder {train_dir}; {ROOT_HINTS['imagefolder']}")
    test_dir = next((os.path.join(root, n) for n in ("val", "test") if os.path.isdir(os.path.join(root, n))), None)
    if test_dir is None:
        raise DataError(f"imagefolder: missing folder {os.path.join(root, 'val')}; {ROOT_HINTS['imagefolder']}")
    classes = tuple(formats.list_class_dirs(train_dir))
    if not classes:
        raise DataError(f"imagefolder: no class folders in {train_dir} (empty dataset); {ROOT_HINTS['imagefolder']}")
    exts = ", ".join(formats.IMAGE_EXTENSIONS)
    train_samples = formats.scan_image_folder(train_dir, classes)
    test_samples = formats.scan_image_folder(test_dir, classes)
    for d, s in ((train_dir, train_samples), (test_dir, test_samples)):
        if not s:
            raise DataError(f"imagefolder: no images found under {d}/<class>/ (empty dataset); expected files ending in {exts}")
    counts = collections.Counter(label for _, label in train_samples)
    empty = [c for i, c in enumerate(classes) if counts[i] == 0]
    if empty:   # a class with no training example would still get an output unit, and never be learnt
        raise DataError(f"imagefolder: class folder {os.path.join(train_dir, empty[0])} has no images "
                        f"({len(empty)} empty class folder(s)); add images ending in {exts} or remove the folder")
    size = image_size or 224
    train = ImageFolderDataset(train_samples, classes=classes)
    test = ImageFolderDataset(test_samples, classes=classes)
    return Source(train, test, len(classes), 3, size, IMAGENET_MEAN, IMAGENET_STD, "pil", True, classes,
                  min_scale=float(min_scale))


def build_synthetic(root, image_size, num_samples=1024, num_test=256, num_classes=10, in_channels=3,
                    noise=1.0, data_seed=0):
    """Random images with a learnable signal, for tests and benchmarks.

    Each class has a smooth random prototype (coarse noise upsampled, unit
    RMS); a sample is (prototype + noise * N(0,1)) / sqrt(1 + noise^2), so
    pixels are roughly zero-mean unit-variance and mean/std are 0/1.
    The data depend only on data_seed (default 0), so every run seed trains
    on the same task; the run seed only picks the val split. No augmentation
    (crops would blur the class signal). `root` is ignored.
    """
    for key, v, lo in (("num_samples", num_samples, 1), ("num_test", num_test, 1),
                       ("num_classes", num_classes, 2), ("in_channels", in_channels, 1)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            extra = " (empty dataset)" if key in ("num_samples", "num_test") else ""
            raise DataError(f"synthetic {key} must be an integer >= {lo}, got {v!r}{extra}")
    if not isinstance(noise, (int, float)) or noise < 0:
        raise DataError(f"synthetic noise must be a number >= 0, got {noise!r}")
    size = image_size or 32
    g = torch.Generator().manual_seed(int(data_seed))
    coarse = max(2, size // 8)
    protos = torch.randn(num_classes, in_channels, coarse, coarse, generator=g)
    protos = F.interpolate(protos, size=(size, size), mode="bilinear", align_corners=False)
    protos = protos / protos.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-6)
    scale = 1.0 / math.sqrt(1.0 + noise * noise)

    def make(n):
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]
        x = (protos[y] + noise * torch.randn(n, in_channels, size, size, generator=g)) * scale
        return x, y

    xtr, ytr = make(num_samples)
    xte, yte = make(num_test)
    classes = tuple(str(i) for i in range(num_classes))
    mean, std = (0.0,) * in_channels, (1.0,) * in_channels
    train = ArrayDataset(xtr, ytr, classes=classes)
    test = ArrayDataset(xte, yte, classes=classes)
    return Source(train, test, num_classes, in_channels, size, mean, std, "tensor", False, classes, can_augment=False)


# ---------------------------------------------------------------------------
# registry

DATASETS = {
    "digits": build_digits,
    "mnist": build_mnist,
    "fashion_mnist": build_fashion_mnist,
    "cifar10": build_cifar10,
    "cifar100": build_cifar100,
    "imagefolder": build_imagefolder,
    "synthetic": build_synthetic,
}
ALIASES = {
    "imagenet": "imagefolder",
    "image_folder": "imagefolder",
    "fashionmnist": "fashion_mnist",
    "cifar_10": "cifar10",
    "cifar_100": "cifar100",
}
# options every dataset accepts (None = dataset default)
COMMON_OPTIONS = ("hflip", "mean", "std")


def available_datasets():
    """Canonical dataset names, sorted."""
    return sorted(DATASETS)


def canonical_name(name):
    """'Fashion-MNIST' -> 'fashion_mnist', 'imagenet' -> 'imagefolder'; DataError if unknown."""
    if not isinstance(name, str):
        raise DataError(f"dataset name must be a string, got {name!r}; choose one of: {', '.join(available_datasets())}")
    key = name.strip().lower().replace("-", "_")
    key = ALIASES.get(key, key)
    if key not in DATASETS:
        raise DataError(
            f"unknown dataset '{name}'; choose one of: {', '.join(available_datasets())} (imagenet is an alias of imagefolder)"
        )
    return key
