"""Data layer: dataset registry (sources.py), storage, splits, transforms and loaders.

    bundle = build_datasets("digits", val_fraction=0.1, seed=0)
    train_loader, val_loader, test_loader = build_loaders(bundle, batch_size=128, seed=0)

Datasets: digits (zero-setup default, bundled with scikit-learn), mnist,
fashion_mnist, cifar10, cifar100, imagefolder (alias imagenet), synthetic.
The val split is carved from the training set; the test set is for reporting
only. Every bad input raises DataError (a ValueError) with a one-line message.
"""

from .errors import DataError
from .datasets import DataBundle, build_datasets
from .sources import DATASETS, available_datasets, canonical_name
from .storage import ArrayDataset, ImageFolderDataset
from .loaders import build_loaders, seed_worker

__all__ = [
    "DATASETS",
    "ArrayDataset",
    "DataBundle",
    "DataError",
    "ImageFolderDataset",
    "available_datasets",
    "build_datasets",
    "build_loaders",
    "canonical_name",
    "seed_worker",
]
