"""DataLoaders with reproducible order and augmentation.

Shuffling uses a torch.Generator seeded from `seed`, so the same seed gives
the same batches. Augmentation randomness comes from each dataset's own
generator: build_loaders reseeds the train set's generator (used when
workers=0), and seed_worker reseeds each worker's copy from the per-worker
seed the DataLoader derives from its seeded generator (workers>0). Results
are therefore reproducible for a fixed (seed, workers) pair; a different
worker count gives a different, equally valid, augmentation stream.
"""

import random

import numpy as np
import torch
from torch.utils.data import DataLoader, get_worker_info

from .errors import DataError

AUGMENT_SEED_OFFSET = 104729  # keeps the augmentation stream apart from the shuffle stream


def _reseed(dataset, seed):
    """Give `dataset` (and any dataset it wraps, e.g. a Subset) a fresh generator."""
    while dataset is not None:
        if isinstance(getattr(dataset, "generator", None), torch.Generator):
            dataset.generator = torch.Generator().manual_seed(seed)
        dataset = getattr(dataset, "dataset", None)


def seed_worker(worker_id):
    """worker_init_fn: seed this worker's dataset generator (and numpy/random,
    for user transforms) from the worker seed, base_seed + worker_id, where
    base_seed was drawn from the loader's seeded generator."""
    info = get_worker_info()
    seed = info.seed
    _reseed(info.dataset, seed % (2**63))
    np.random.seed(seed % (2**32))
    random.seed(seed)


def build_loaders(bundle, batch_size, workers=0, seed=0, pin_memory=False, drop_last=False, sampler=None):
    """(train_loader, val_loader, test_loader) for a DataBundle.

    The train loader shuffles with a generator seeded by `seed` (unless a
    `sampler` is given, e.g. a DistributedSampler, which then owns the order);
    drop_last applies to train only. val/test keep dataset order.
    Note: reseeds bundle.train's augmentation generator, so calling this again
    with the same seed restarts the same data stream.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise DataError(f"batch_size must be a positive integer, got {batch_size!r}")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise DataError(f"workers must be an integer >= 0, got {workers!r}")
    _reseed(bundle.train, seed + AUGMENT_SEED_OFFSET)
    common = dict(
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=seed_worker if workers > 0 else None,
    )
    train = DataLoader(
        bundle.train,
        batch_size=batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        **common,
    )
    # own generators so evaluating never consumes the train or global RNG
    val = DataLoader(bundle.val, batch_size=batch_size, shuffle=False,
                     generator=torch.Generator().manual_seed(seed), **common)
    test = DataLoader(bundle.test, batch_size=batch_size, shuffle=False,
                      generator=torch.Generator().manual_seed(seed), **common)
    return train, val, test
