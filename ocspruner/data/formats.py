"""Readers for the on-disk formats: MNIST-style idx files, CIFAR python
pickles, and class-per-folder image trees.

They return plain tensors / lists and raise DataError (one line: what is wrong,
which file, what to do) for anything unexpected, so the dataset builders stay
short and the CLI never shows a traceback for bad data.
"""

import gzip
import importlib
import os
import pickle
import struct
import zlib

import numpy as np
import torch

from .errors import DataError

# ---------------------------------------------------------------------------
# idx (MNIST, Fashion-MNIST)

# magic = 0x0000 | type code | number of dims; we only need unsigned bytes
IDX_UBYTE = 0x08
IDX_IMAGES_MAGIC = 0x00000803  # ubyte, 3 dims (N, rows, cols)
IDX_LABELS_MAGIC = 0x00000801  # ubyte, 1 dim (N,)


def idx_candidates(stem, kind):
    """File names an idx file is published under, most common first.

    e.g. stem='train', kind='images' -> train-images-idx3-ubyte(.gz) and the
    train-images.idx3-ubyte variant some mirrors use.
    """
    ndim = 3 if kind == "images" else 1
    base = f"{stem}-{kind}-idx{ndim}-ubyte"
    dotted = f"{stem}-{kind}.idx{ndim}-ubyte"
    return [base, base + ".gz", dotted, dotted + ".gz"]


def find_idx_file(dirs, stem, kind):
    """First existing candidate name in any of `dirs`, or None."""
    for d in dirs:
        for name in idx_candidates(stem, kind):
            path = os.path.join(d, name)
            if os.path.isfile(path):
                return path
    return None


def _read_bytes(path):
    """Whole file, transparently gunzipped when the name ends in .gz."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                return f.read()
        with open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {path}: {e}; the file is corrupt or truncated, re-download it")


def read_idx(path, expect_magic):
    """Parse an idx file of unsigned bytes into a uint8 tensor of its shape.

    Header: 4-byte big-endian magic (0, 0, type code, ndim), then ndim
    big-endian uint32 sizes, then the data. We check the magic against what
    the caller expects (images vs labels) so swapped or foreign files are
    caught, and the length against the declared shape so truncation is too.
    """
    data = _read_bytes(path)
    if len(data) < 4:
        raise DataError(f"corrupt idx file {path}: only {len(data)} bytes; re-download it")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expect_magic:
        what = "images" if expect_magic == IDX_IMAGES_MAGIC else "labels"
        raise DataError(
            f"bad magic number 0x{magic:08x} in {path} (expected 0x{expect_magic:08x} for idx {what}); "
            f"the file is corrupt, not idx, or a gzip file without the .gz suffix"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"corrupt idx file {path}: header truncated; re-download it")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    n = int(np.prod(shape, dtype=np.int64))
    if len(data) - header != n:
        raise DataError(
            f"corrupt idx file {path}: header declares shape {tuple(shape)} ({n} bytes) "
            f"but {len(data) - header} data bytes follow; re-download it"
        )
    arr = np.frombuffer(data, dtype=np.uint8, count=n, offset=header).reshape(shape)
    return torch.from_numpy(arr.copy())


def read_idx_pair(dirs, stem, name, num_classes):
    """Images (N,1,H,W) uint8 and labels (N,) int64 for the `stem` split."""
    img_path = find_idx_file(dirs, stem, "images")
    lbl_path = find_idx_file(dirs, stem, "labels")
    for path, kind in ((img_path, "images"), (lbl_path, "labels")):
        if path is None:
            want = " or ".join(idx_candidates(stem, kind)[:2])
            raise DataError(f"{name}: missing file {want} in {dirs[0]}; point --data-root at the folder holding the idx files")
    images = read_idx(img_path, IDX_IMAGES_MAGIC)
    labels = read_idx(lbl_path, IDX_LABELS_MAGIC).long()
    if images.shape[0] != labels.shape[0]:
        raise DataError(
            f"{name}: {img_path} has {images.shape[0]} images but {lbl_path} has {labels.shape[0]} labels; "
            f"the files do not belong together, re-download them"
        )
    if images.shape[0] == 0:
        raise DataError(f"{name}: {img_path} contains no images (empty dataset); re-download it")
    if int(labels.max()) >= num_classes:
        raise DataError(f"{name}: {lbl_path} has label {int(labels.max())} >= {num_classes} classes; wrong or corrupt file")
    return images.unsqueeze(1), labels


# ---------------------------------------------------------------------------
# CIFAR python pickles

# Pickle can run arbitrary code, so CIFAR batches are unpickled with an
# allow-list: they only hold dicts, lists, strings and numpy arrays.
_PICKLE_ALLOWED = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("_codecs", "encode"),
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _PICKLE_ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} (not numpy array data)")
        # numpy 2 renamed numpy.core -> numpy._core (and numpy <2 lacks _core)
        alts = [module]
        if module.startswith("numpy.core."):
            alts.append("numpy._core." + module[len("numpy.core."):])
        elif module.startswith("numpy._core."):
            alts.append("numpy.core." + module[len("numpy._core."):])
        if module.startswith("numpy.core.") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            alts.reverse()  # avoid the numpy.core deprecation warning
        for mod in alts:
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
        raise pickle.UnpicklingError(f"cannot resolve {module}.{name}")


def _get(d, key):
    """dict lookup accepting str or bytes keys (Python 2 pickles give bytes)."""
    if key in d:
        return d[key]
    return d.get(key.encode("ascii"))


def read_cifar_pickle(path):
    """Load one CIFAR pickle file into a dict; DataError if unreadable."""
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}")
    except Exception as e:  # unpickling raises many types on garbage input
        raise DataError(f"corrupt CIFAR file {path}: unpickling failed ({type(e).__name__}: {e}); re-download and extract the archive")
    if not isinstance(obj, dict):
        raise DataError(f"corrupt CIFAR file {path}: expected a dict, got {type(obj).__name__}")
    return obj


def read_cifar_batch(path, label_key, num_classes):
    """One batch file -> images (N,3,32,32) uint8, labels (N,) int64.

    Rows are 3072 bytes: 1024 red, 1024 green, 1024 blue, each row-major 32x32,
    i.e. already CHW after a reshape.
    """
    d = read_cifar_pickle(path)
    data, labels = _get(d, "data"), _get(d, label_key)
    if data is None or labels is None:
        raise DataError(f"corrupt CIFAR file {path}: missing key 'data' or '{label_key}'")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3072 or data.dtype != np.uint8:
        raise DataError(f"corrupt CIFAR file {path}: 'data' has shape {data.shape} dtype {data.dtype}, expected (N, 3072) uint8")
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise DataError(f"corrupt CIFAR file {path}: {data.shape[0]} images but {labels.shape[0]} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"corrupt CIFAR file {path}: labels outside [0, {num_classes}) under key '{label_key}'")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels.copy())


def read_cifar_names(path, key):
    """Class names from a CIFAR meta file, or None if the file is absent."""
    if not os.path.isfile(path):
        return None
    names = _get(read_cifar_pickle(path), key)
    if names is None:
        return None
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


# ---------------------------------------------------------------------------
# image folders

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def list_class_dirs(path):
    """Sorted names of the sub-directories of `path` (the class names)."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def scan_image_folder(path, classes):
    """[(file path, class index)] for every image under path/<class>/, sorted
    so the order (and hence the seeded splits) is the same on every machine.

    Sub-folders inside a class folder are searched too. Directories named
    after classes not in `classes` are an error (a val class unknown to train
    would get no output unit).
    """
    index = {c: i for i, c in enumerate(classes)}
    samples = []
    for c in list_class_dirs(path):
        if c not in index:
            raise DataError(f"class folder '{c}' in {path} does not exist in the training folder; rename or remove it")
        for dirpath, dirnames, filenames in os.walk(os.path.join(path, c), followlinks=True):
            dirnames.sort()
            for fn in sorted(filenames):
                if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                    samples.append((os.path.join(dirpath, fn), index[c]))
    return samples
