"""Seeded, stratified splits: a validation set carved from the training pool, a quick-run
subset, a held-out test split for sources without one. Pure functions of the labels, the count
and the generator's state."""

import math

import torch


def stratified_pick(labels, k, generator):
    """Sorted positions of k examples, drawn at random within each class, with
    per-class counts proportional to class frequency (largest-remainder
    rounding in exact integer arithmetic, ties to the lower class id, so the
    result only depends on the labels, k and the generator state)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    n = len(labels)
    if k >= n:
        return torch.arange(n)
    classes, counts = torch.unique(labels, return_counts=True)
    counts = counts.tolist()
    quota = [c * k // n for c in counts]
    remainder = [c * k % n for c in counts]
    extra = k - sum(quota)
    for c in sorted(range(len(counts)), key=lambda c: (-remainder[c], c))[:extra]:
        quota[c] += 1
    picked = []
    for cls, q in zip(classes.tolist(), quota):
        pos = (labels == cls).nonzero().flatten()
        perm = torch.randperm(len(pos), generator=generator)
        picked.append(pos[perm[:q]])
    return torch.cat(picked).sort().values


def split_off(labels, k, generator):
    """(rest, picked): k stratified positions and the remaining ones, both sorted."""
    picked = stratified_pick(labels, k, generator)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[picked] = False
    return mask.nonzero().flatten(), picked


def fraction_count(fraction, n):
    """round(fraction * n), but at least 1 when fraction > 0 and n > 1."""
    k = int(math.floor(fraction * n + 0.5))
    if fraction > 0 and k == 0 and n > 1:
        k = 1
    return k
