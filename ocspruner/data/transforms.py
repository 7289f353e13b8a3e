"""Small image transforms, written here because torchvision is not a dependency.

Two families:
  * tensor transforms for the in-memory 32x32-style datasets (digits, mnist,
    fashion_mnist, cifar, synthetic): they take a CHW tensor (uint8 or float);
  * PIL transforms for lazily loaded image folders (random-resized-crop,
    resize + center crop), ending in PILToTensor.

Every transform is called as t(x, generator=None). Random ones draw from the
given torch.Generator, or from torch's global RNG when it is None. The datasets
own a generator and pass it in; build_loaders reseeds it (and, in DataLoader
workers, seed_worker reseeds it from the worker seed the loader derived from
its own seeded generator), so augmentation is reproducible for a given seed
and worker count.
"""

import math

import numpy as np
import torch
from PIL import Image


def _randint(low, high, generator):
    """Uniform integer in [low, high] inclusive, from the torch RNG."""
    return int(torch.randint(low, high + 1, (1,), generator=generator).item())


def _uniform(low, high, generator):
    return low + (high - low) * float(torch.rand(1, generator=generator).item())


class Compose:
    """Apply transforms in order, forwarding the generator to each."""

    def __init__(self, transforms):
        self.transforms = list(transforms)

    def __call__(self, x, generator=None):
        for t in self.transforms:
            x = t(x, generator=generator)
        return x

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


# ---------------------------------------------------------------------------
# tensor transforms (CHW)

class ToFloat:
    """uint8 [0,255] -> float32 [0,1]; float input is passed through as float32.

    The array datasets keep uint8 in memory (4x smaller) and convert per sample.
    """

    def __call__(self, x, generator=None):
        if x.dtype == torch.uint8:
            return x.to(torch.float32).div_(255.0)
        # copy so later in-place ops can never write into the dataset's storage
        return x.to(torch.float32, copy=True)

    def __repr__(self):
        return "ToFloat()"


class RandomPadCrop:
    """Zero-pad by `padding` on every side, then crop a random size x size window.

    The classic CIFAR augmentation (pad 4, crop 32). Applied before Normalize
    so the padding is black, as in the usual recipe. Implemented by copying the
    overlap into a zero canvas instead of padding + slicing, which saves one
    allocation per sample.
    """

    def __init__(self, size, padding=4):
        self.size = int(size)
        self.padding = int(padding)

    def __call__(self, x, generator=None):
        c, h, w = x.shape
        p, s = self.padding, self.size
        # top-left corner of the window in padded coordinates
        i = _randint(0, h + 2 * p - s, generator)
        j = _randint(0, w + 2 * p - s, generator)
        # same corner in the unpadded image (may be negative)
        top, left = i - p, j - p
        out = x.new_zeros((c, s, s))
        src_t, src_l = max(top, 0), max(left, 0)
        src_b, src_r = min(top + s, h), min(left + s, w)
        if src_b > src_t and src_r > src_l:
            dst_t, dst_l = src_t - top, src_l - left
            out[:, dst_t:dst_t + src_b - src_t, dst_l:dst_l + src_r - src_l] = x[:, src_t:src_b, src_l:src_r]
        return out

    def __repr__(self):
        return f"RandomPadCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror left-right with probability p (works on CHW tensors)."""

    def __init__(self, p=0.5):
        self.p = float(p)

    def __call__(self, x, generator=None):
        if float(torch.rand(1, generator=generator).item()) < self.p:
            return x.flip(-1)
        return x

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"


class Normalize:
    """(x - mean) / std per channel, on a float CHW tensor."""

    def __init__(self, mean, std):
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Normalize std must be positive, got {self.std}")
        self._m = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        self._s = torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, x, generator=None):
        return (x - self._m) / self._s

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


# ---------------------------------------------------------------------------
# PIL transforms (for image folders)

class RandomResizedCrop:
    """Crop a random area fraction in `scale` with aspect ratio in `ratio`,
    resized to size x size (the Inception / ImageNet training crop).

    Tries 10 random boxes; if none fits, falls back to a center crop with the
    aspect ratio clamped to `ratio`. Resizing uses PIL's box argument so only
    the crop is resampled.
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        self.size = int(size)
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))

    def get_box(self, width, height, generator=None):
        area = width * height
        log_lo, log_hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        for _ in range(10):
            target = area * _uniform(self.scale[0], self.scale[1], generator)
            aspect = math.exp(_uniform(log_lo, log_hi, generator))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= width and 0 < h <= height:
                top = _randint(0, height - h, generator)
                left = _randint(0, width - w, generator)
                return left, top, w, h
        # fallback: whole image, aspect clamped into the allowed range
        in_ratio = width / height
        if in_ratio < self.ratio[0]:
            w, h = width, int(round(width / self.ratio[0]))
        elif in_ratio > self.ratio[1]:
            h, w = height, int(round(height * self.ratio[1]))
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img, generator=None):
        left, top, w, h = self.get_box(img.width, img.height, generator)
        return img.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))

    def __repr__(self):
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio})"


class ResizeShorter:
    """Resize so the shorter side equals `size`, keeping the aspect ratio."""

    def __init__(self, size):
        self.size = int(size)

    def __call__(self, img, generator=None):
        w, h = img.size
        if min(w, h) == self.size:
            return img
        if w <= h:
            nw, nh = self.size, max(1, int(round(h * self.size / w)))
        else:
            nw, nh = max(1, int(round(w * self.size / h))), self.size
        return img.resize((nw, nh), Image.BILINEAR)

    def __repr__(self):
        return f"ResizeShorter({self.size})"


class CenterCrop:
    """Crop the central size x size window (PIL pads with black if too small)."""

    def __init__(self, size):
        self.size = int(size)

    def __call__(self, img, generator=None):
        w, h = img.size
        left = int(round((w - self.size) / 2.0))
        top = int(round((h - self.size) / 2.0))
        return img.crop((left, top, left + self.size, top + self.size))

    def __repr__(self):
        return f"CenterCrop({self.size})"


class PILToTensor:
    """PIL image -> float32 CHW tensor in [0,1]."""

    def __call__(self, img, generator=None):
        a = np.asarray(img, dtype=np.uint8)
        if a.ndim == 2:
            a = a[:, :, None]
        t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))
        return t.to(torch.float32).div_(255.0)

    def __repr__(self):
        return "PILToTensor()"


# ---------------------------------------------------------------------------
# the standard pipelines

def tensor_train_transform(image_size, mean, std, hflip=True, padding=None):
    """uint8/float CHW -> pad-crop (+ flip) -> normalised float. padding defaults
    to image_size/8 (4 for 32x32)."""
    if padding is None:
        padding = max(1, int(round(image_size / 8)))
    ts = [ToFloat(), RandomPadCrop(image_size, padding)]
    if hflip:
        ts.append(RandomHorizontalFlip())
    ts.append(Normalize(mean, std))
    return Compose(ts)


def tensor_eval_transform(mean, std):
    return Compose([ToFloat(), Normalize(mean, std)])


def pil_train_transform(image_size, mean, std, hflip=True, min_scale=0.08):
    ts = [RandomResizedCrop(image_size, scale=(min_scale, 1.0)), PILToTensor()]
    if hflip:
        ts.append(RandomHorizontalFlip())
    ts.append(Normalize(mean, std))
    return Compose(ts)


def pil_eval_transform(image_size, mean, std):
    """Resize the shorter side to image_size*256/224 (256 for 224), center crop."""
    resize = int(math.floor(image_size * 256 / 224))
    return Compose([ResizeShorter(resize), CenterCrop(image_size), PILToTensor(), Normalize(mean, std)])
