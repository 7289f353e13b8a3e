"""How a dataset's examples are held: in memory (ArrayDataset) or as image files decoded on
demand (ImageFolderDataset). Both hand out views (index lists over shared storage, each with its
own transform and augmentation generator), so splitting copies nothing."""

import torch
from PIL import Image
from torch.utils.data import Dataset

from .errors import DataError


class ArrayDataset(Dataset):
    """Images held in memory as one (N, C, H, W) tensor (uint8 or float) plus
    int64 labels; `indices` selects the examples this view exposes.

    `generator` feeds the random transforms; build_loaders / seed_worker
    reseed it so augmentation is reproducible.
    """

    def __init__(self, images, labels, indices=None, transform=None, classes=None, seed=0):
        self.images = images
        self.labels = labels
        self.indices = torch.arange(len(labels)) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        self.transform = transform
        self.classes = classes
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, i):
        j = int(self.indices[i])
        x = self.images[j]
        if self.transform is not None:
            x = self.transform(x, generator=self.generator)
        return x, int(self.labels[j])

    @property
    def targets(self):
        """Labels of this view, in order (used for stratified splits)."""
        return self.labels[self.indices]

    def view(self, positions=None, transform=None, seed=0):
        """A new view of positions (into this view) sharing the storage."""
        idx = self.indices if positions is None else self.indices[torch.as_tensor(positions, dtype=torch.long)]
        return ArrayDataset(self.images, self.labels, idx, transform, self.classes, seed)

    def __repr__(self):
        return f"ArrayDataset(n={len(self)}, shape={tuple(self.images.shape[1:])}, transform={self.transform!r})"


class ImageFolderDataset(Dataset):
    """Image files decoded lazily with PIL (ImageNet-sized data does not fit in
    memory). `samples` is a list of (path, class index)."""

    def __init__(self, samples, transform=None, classes=None, seed=0):
        self.samples = list(samples)
        self.transform = transform
        self.classes = classes
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, label = self.samples[i]
        try:
            with Image.open(path) as img:
                img = img.convert("RGB")
        except Exception as e:  # PIL raises many types for unreadable files
            raise DataError(f"cannot read image {path}: {type(e).__name__}: {e}; remove or replace the file")
        if self.transform is not None:
            img = self.transform(img, generator=self.generator)
        return img, label

    @property
    def targets(self):
        return torch.tensor([s[1] for s in self.samples], dtype=torch.long)

    def view(self, positions=None, transform=None, seed=0):
        samples = self.samples if positions is None else [self.samples[int(p)] for p in positions]
        return ImageFolderDataset(samples, transform, self.classes, seed)

    def __repr__(self):
        return f"ImageFolderDataset(n={len(self)}, transform={self.transform!r})"
