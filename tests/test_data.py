"""Tests for ocspruner.data: readers on tiny fixture files of every format,
splits, subsets, loader reproducibility, transforms and error messages.
Fast, offline; the real Fashion-MNIST check is skipped unless the Debian
package dataset-fashion-mnist is installed."""

import gzip
import os
import pickle
import shutil
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ocspruner.data import DataBundle, DataError, ArrayDataset, available_datasets, build_datasets, build_loaders
from ocspruner.data import transforms as T
from ocspruner.data.sources import CIFAR10_MEAN, CIFAR10_STD, FASHION_DEFAULT_ROOT, FASHION_MEAN, FASHION_STD, IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN, MNIST_STD
from ocspruner.data.splits import stratified_pick

# ---------------------------------------------------------------------------
# fixture writers


def write_idx(path, arr, gz):
    arr = np.asarray(arr, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 | arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.tobytes()
    if gz:
        with gzip.open(path + ".gz", "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def make_idx_dir(d, n_train=40, n_test=10, gz=True, seed=0):
    """MNIST-layout folder; returns the raw arrays for checking."""
    rng = np.random.default_rng(seed)
    os.makedirs(d, exist_ok=True)
    xtr = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    ytr = np.arange(n_train) % 10
    xte = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    yte = (np.arange(n_test) * 3) % 10
    write_idx(os.path.join(d, "train-images-idx3-ubyte"), xtr, gz)
    write_idx(os.path.join(d, "train-labels-idx1-ubyte"), ytr, gz)
    write_idx(os.path.join(d, "t10k-images-idx3-ubyte"), xte, gz)
    write_idx(os.path.join(d, "t10k-labels-idx1-ubyte"), yte, gz)
    return xtr, ytr, xte, yte


def cifar_rows(n, offset):
    """n rows of 3072 bytes with a position-dependent pattern (CHW order)."""
    base = (np.arange(3072) * 7) % 251
    return ((base[None, :] + offset + np.arange(n)[:, None]) % 256).astype(np.uint8)


def make_cifar10_dir(parent, per_batch=4, n_test=6):
    d = os.path.join(parent, "cifar-10-batches-py")
    os.makedirs(d)
    names = [f"class{i}" for i in range(10)]
    for i in range(1, 6):
        rows = cifar_rows(per_batch, 10 * i)
        labels = [(i + k) % 10 for k in range(per_batch)]
        # bytes keys, as Python 2 pickles of the real archive load with encoding="bytes"
        with open(os.path.join(d, f"data_batch_{i}"), "wb") as f:
            pickle.dump({b"data": rows, b"labels": labels, b"batch_label": b"x"}, f, protocol=2)
    with open(os.path.join(d, "test_batch"), "wb") as f:
        pickle.dump({b"data": cifar_rows(n_test, 99), b"labels": list(range(n_test))}, f, protocol=2)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, f, protocol=2)
    return d


def make_cifar100_dir(parent, n_train=30, n_test=8):
    d = os.path.join(parent, "cifar-100-python")
    os.makedirs(d)
    for split, n in (("train", n_train), ("test", n_test)):
        fine = [(k * 37) % 100 for k in range(n)]
        with open(os.path.join(d, split), "wb") as f:  # str keys, protocol 5 (numpy _frombuffer path)
            pickle.dump({"data": cifar_rows(n, 5), "fine_labels": fine, "coarse_labels": [x // 5 for x in fine]}, f, protocol=5)
    with open(os.path.join(d, "meta"), "wb") as f:
        pickle.dump({"fine_label_names": [f"f{i}" for i in range(100)], "coarse_label_names": [f"c{i}" for i in range(20)]}, f)
    return d


def make_image_folder(root, n_train=4, n_val=2):
    colors = {"cat": (200, 30, 30), "dog": (20, 180, 60)}
    for split, n in (("train", n_train), ("val", n_val)):
        for c, rgb in colors.items():
            os.makedirs(os.path.join(root, split, c))
            for k in range(n):
                size = (40 + 4 * k, 30 + 2 * k)  # varied, non-square sizes
                Image.new("RGB", size, rgb).save(os.path.join(root, split, c, f"img{k}.png"))
    return colors


def one_line(excinfo):
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, DataError) and isinstance(excinfo.value, ValueError)
    assert msg and "\n" not in msg
    return msg


# ---------------------------------------------------------------------------
# formats


@pytest.mark.parametrize("gz", [True, False])
def test_idx_reader_shapes_labels_normalisation(tmp_path, gz):
    xtr, ytr, xte, yte = make_idx_dir(str(tmp_path), gz=gz)
    b = build_datasets("fashion_mnist", str(tmp_path), val_fraction=0.25, augment=False)
    assert isinstance(b, DataBundle)
    assert (b.num_classes, b.in_channels, b.image_size, b.name) == (10, 1, 32, "fashion_mnist")
    assert b.mean == FASHION_MEAN and b.std == FASHION_STD
    assert (len(b.train), len(b.val), len(b.test)) == (30, 10, 10)
    # every example: the 28x28 image zero-padded by 2 to 32x32, then normalised
    for ds, xs, ys in ((b.train, xtr, ytr), (b.val, xtr, ytr), (b.test, xte, yte)):
        for i in range(len(ds)):
            x, y = ds[i]
            j = int(ds.indices[i])
            raw = torch.from_numpy(xs[j]).float() / 255
            want = (F.pad(raw, (2, 2, 2, 2)) - FASHION_MEAN[0]) / FASHION_STD[0]
            assert x.shape == (1, 32, 32) and x.dtype == torch.float32
            assert torch.allclose(x[0], want, atol=1e-6)
            assert y == int(ys[j])


def test_mnist_raw_subfolder_and_resize(tmp_path):
    make_idx_dir(str(tmp_path / "raw"), gz=False)  # torchvision-style root/raw
    b = build_datasets("mnist", str(tmp_path), image_size=28, augment=False)
    assert b.mean == MNIST_MEAN and b.std == MNIST_STD and b.image_size == 28
    assert b.train[0][0].shape == (1, 28, 28)
    b = build_datasets("mnist", str(tmp_path), image_size=14)  # shrinking resizes
    assert b.test[0][0].shape == (1, 14, 14)


def test_cifar10_reader(tmp_path):
    d = make_cifar10_dir(str(tmp_path))
    for root in (str(tmp_path), d):  # parent or the batches folder itself
        b = build_datasets("cifar10", root, val_fraction=0.2, augment=False)
        assert (len(b.train), len(b.val), len(b.test)) == (16, 4, 6)
        assert (b.num_classes, b.in_channels, b.image_size) == (10, 3, 32)
        assert b.classes == tuple(f"class{i}" for i in range(10))
    # test set keeps file order: example k is row k, laid out CHW
    rows = cifar_rows(6, 99)
    for k in range(6):
        x, y = b.test[k]
        want = torch.from_numpy(rows[k].reshape(3, 32, 32)).float() / 255
        want = (want - torch.tensor(CIFAR10_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR10_STD).view(3, 1, 1)
        assert y == k and torch.allclose(x, want, atol=1e-5)
    # train examples come from batches 1..5 in order
    pool_labels = [(i + k) % 10 for i in range(1, 6) for k in range(4)]
    for ds in (b.train, b.val):
        for i in range(len(ds)):
            assert ds[i][1] == pool_labels[int(ds.indices[i])]


def _py2_str(b):
    """A Python 2 `str` pickle opcode (SHORT_BINSTRING / BINSTRING)."""
    b = b if isinstance(b, bytes) else b.encode("latin1")
    return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<I", len(b)) + b


def test_cifar_python2_pickle(tmp_path):
    """The real archive was pickled by Python 2 numpy: numpy.core globals and
    byte strings. Hand-assemble such a file (one image, label 3) and read it."""
    raw = bytes(range(256)) * 12
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + _py2_str("b") + b"\x87R"
           + b"(K\x01K\x01M\x00\x0c\x86cnumpy\ndtype\n" + _py2_str("u1") + b"K\x00K\x01\x87R(K\x03" + _py2_str("|")
           + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89" + _py2_str(raw) + b"tb")
    blob = b"\x80\x02}(" + _py2_str("data") + arr + _py2_str("labels") + b"]K\x03au."
    d = make_cifar10_dir(str(tmp_path))
    with open(os.path.join(d, "test_batch"), "wb") as f:
        f.write(blob)
    b = build_datasets("cifar10", d, augment=False)
    assert len(b.test) == 1 and b.test.targets.tolist() == [3]
    assert torch.equal(b.test.images[0], torch.tensor(list(raw), dtype=torch.uint8).view(3, 32, 32))


def test_cifar100_reader(tmp_path):
    make_cifar100_dir(str(tmp_path))
    b = build_datasets("cifar100", str(tmp_path), val_fraction=0.0, augment=False)
    assert (len(b.train), len(b.val), len(b.test)) == (30, 0, 8)
    assert b.num_classes == 100 and b.classes[:2] == ("f0", "f1")
    assert [b.train[k][1] for k in range(5)] == [(k * 37) % 100 for k in range(5)]
    c = build_datasets("cifar100", str(tmp_path), label_mode="coarse")
    assert c.num_classes == 20 and len(c.classes) == 20
    assert c.test[1][1] == 37 // 5


def test_imagefolder_reader(tmp_path):
    colors = make_image_folder(str(tmp_path))
    b = build_datasets("imagenet", str(tmp_path), image_size=16, val_fraction=0.25)
    assert b.name == "imagefolder" and b.classes == ("cat", "dog") and b.num_classes == 2
    assert (len(b.train), len(b.val), len(b.test)) == (6, 2, 4)
    assert b.mean == IMAGENET_MEAN and b.std == IMAGENET_STD
    x, y = b.train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32
    # solid-colour images: eval output is exactly the normalised colour
    for k in range(len(b.test)):
        x, y = b.test[k]
        rgb = torch.tensor(colors[b.classes[y]], dtype=torch.float32).view(3, 1, 1) / 255
        want = (rgb - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
        assert x.shape == (3, 16, 16) and torch.allclose(x, want.expand(3, 16, 16), atol=1e-5)
    assert [y for _, y in (b.test[k] for k in range(4))] == [0, 0, 1, 1]


def test_digits_default():
    b = build_datasets("digits")
    assert (b.num_classes, b.in_channels, b.image_size) == (10, 1, 32)
    assert len(b.train) + len(b.val) + len(b.test) == 1797
    assert len(b.test) == 359 and len(b.val) == 144
    x, y = b.train[0]
    assert x.shape == (1, 32, 32) and 0 <= y < 10
    # normalisation: eval-transformed training images are roughly standardised
    e = build_datasets("digits", augment=False)
    xs = torch.stack([e.train[i][0] for i in range(len(e.train))])
    assert abs(xs.mean().item()) < 0.05 and abs(xs.std().item() - 1) < 0.05
    # the test split does not move with the run seed; val does
    b2 = build_datasets("digits", seed=1)
    assert torch.equal(b.test.indices, b2.test.indices)
    assert not torch.equal(b.val.indices, b2.val.indices)


def test_synthetic_learnable_and_deterministic():
    b = build_datasets("synthetic", num_samples=200, num_test=100, num_classes=4, in_channels=2, image_size=8)
    assert (len(b.train) + len(b.val), len(b.test), b.num_classes, b.in_channels, b.image_size) == (200, 100, 4, 2, 8)
    xtr = torch.stack([b.train[i][0] for i in range(len(b.train))])
    ytr = torch.tensor([b.train[i][1] for i in range(len(b.train))])
    centroids = torch.stack([xtr[ytr == c].mean(0) for c in range(4)]).flatten(1)
    xte = torch.stack([b.test[i][0] for i in range(len(b.test))]).flatten(1)
    yte = torch.tensor([b.test[i][1] for i in range(len(b.test))])
    acc = (torch.cdist(xte, centroids).argmin(1) == yte).float().mean().item()
    assert acc > 0.9  # nearest-centroid learns it, so the signal is real
    again = build_datasets("synthetic", num_samples=200, num_test=100, num_classes=4, in_channels=2, image_size=8)
    assert torch.equal(b.test[3][0], again.test[3][0])


# ---------------------------------------------------------------------------
# splits, subsets, loaders


def test_val_split_disjoint_stratified_deterministic():
    b = build_datasets("synthetic", num_samples=500, num_classes=5, val_fraction=0.2, seed=3)
    tr, va = set(b.train.indices.tolist()), set(b.val.indices.tolist())
    assert not tr & va and tr | va == set(range(500))
    assert len(va) == 100
    assert torch.bincount(b.val.targets, minlength=5).tolist() == [20] * 5  # stratified
    same = build_datasets("synthetic", num_samples=500, num_classes=5, val_fraction=0.2, seed=3)
    assert torch.equal(b.val.indices, same.val.indices)
    other = build_datasets("synthetic", num_samples=500, num_classes=5, val_fraction=0.2, seed=4)
    assert not torch.equal(b.val.indices, other.val.indices)


def test_subset_stratified_deterministic():
    full = build_datasets("synthetic", num_samples=500, num_classes=5, seed=1)
    b = build_datasets("synthetic", num_samples=500, num_classes=5, seed=1, subset=50)
    assert len(b.train) == 50
    assert set(b.train.indices.tolist()) <= set(full.train.indices.tolist())
    assert torch.equal(b.val.indices, full.val.indices)  # val unaffected by subset
    assert torch.bincount(b.train.targets, minlength=5).tolist() == [10] * 5
    again = build_datasets("synthetic", num_samples=500, num_classes=5, seed=1, subset=50)
    assert torch.equal(b.train.indices, again.train.indices)


def test_stratified_pick_counts():
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1)
    pos = stratified_pick(labels, 5, torch.Generator().manual_seed(0))
    assert len(pos) == 5 and len(set(pos.tolist())) == 5
    assert torch.bincount(labels[pos], minlength=3).tolist() == [4, 1, 0]


def _epoch(loader):
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_loader_order_and_augmentation_reproducible(tmp_path):
    make_idx_dir(str(tmp_path), n_train=60)
    b = build_datasets("fashion_mnist", str(tmp_path))
    tl, vl, te = build_loaders(b, batch_size=8, seed=5)
    x1, y1 = _epoch(tl)
    x1b, _ = _epoch(tl)
    assert not torch.equal(x1, x1b)  # next epoch: new order / augmentation
    tl2, _, _ = build_loaders(b, batch_size=8, seed=5)
    x2, y2 = _epoch(tl2)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    tl3, _, _ = build_loaders(b, batch_size=8, seed=6)
    assert not torch.equal(_epoch(tl3)[1], y1)
    # val/test keep dataset order
    assert _epoch(vl)[1].tolist() == b.val.targets.tolist()
    assert len(te.dataset) == 10


def test_loader_reproducible_with_workers(tmp_path):
    make_idx_dir(str(tmp_path), n_train=40)
    b = build_datasets("fashion_mnist", str(tmp_path))
    runs = [_epoch(build_loaders(b, batch_size=8, workers=2, seed=1)[0]) for _ in range(2)]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_loader_sampler_and_drop_last():
    b = build_datasets("synthetic", num_samples=50, val_fraction=0.1)
    tl, _, _ = build_loaders(b, batch_size=10, drop_last=True, sampler=list(range(len(b.train)))[::-1])
    _, ys = _epoch(tl)
    assert len(ys) == 40 and ys.tolist() == b.train.targets.flip(0)[:40].tolist()


# ---------------------------------------------------------------------------
# transforms


def test_pad_crop_matches_reference():
    x = torch.arange(2 * 6 * 6, dtype=torch.float32).view(2, 6, 6) + 1
    t = T.RandomPadCrop(6, padding=2)
    for s in range(20):
        g1, g2 = torch.Generator().manual_seed(s), torch.Generator().manual_seed(s)
        out = t(x, generator=g1)
        i = int(torch.randint(0, 5, (1,), generator=g2))
        j = int(torch.randint(0, 5, (1,), generator=g2))
        assert torch.equal(out, F.pad(x, (2, 2, 2, 2))[:, i:i + 6, j:j + 6])


def test_flip_normalize_tofloat():
    x = torch.arange(12, dtype=torch.uint8).view(1, 3, 4)
    f = T.ToFloat()(x)
    assert f.dtype == torch.float32 and torch.allclose(f * 255, x.float())
    assert torch.equal(T.RandomHorizontalFlip(p=1.0)(f), f.flip(-1))
    assert torch.equal(T.RandomHorizontalFlip(p=0.0)(f), f)
    n = T.Normalize((0.5,), (0.25,))(f)
    assert torch.allclose(n, (f - 0.5) / 0.25)


def test_pil_transforms():
    img = Image.new("RGB", (50, 30), (10, 20, 30))
    rrc = T.RandomResizedCrop(12)
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        left, top, w, h = rrc.get_box(50, 30, g)
        assert 0 <= left and 0 <= top and left + w <= 50 and top + h <= 30
    assert rrc(img, generator=g).size == (12, 12)
    ev = T.pil_eval_transform(16, (0, 0, 0), (1, 1, 1))
    out = ev(img)
    assert out.shape == (3, 16, 16)
    assert torch.allclose(out[:, 0, 0], torch.tensor([10, 20, 30]) / 255.0, atol=1e-6)
    assert T.ResizeShorter(18)(img).size == (30, 18)


# ---------------------------------------------------------------------------
# errors: one line, naming the problem and the fix


def test_error_unknown_dataset():
    with pytest.raises(DataError) as e:
        build_datasets("cifar11")
    msg = one_line(e)
    assert "cifar11" in msg and all(n in msg for n in available_datasets())


def test_error_missing_root(tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(DataError) as e:
        build_datasets("fashion_mnist", missing)
    msg = one_line(e)
    assert missing in msg and "apt-get install dataset-fashion-mnist" in msg and "--data-root" in msg
    for name in ("mnist", "cifar10", "cifar100", "imagefolder"):
        with pytest.raises(DataError) as e:
            build_datasets(name, missing)
        assert missing in one_line(e)
        with pytest.raises(DataError) as e:
            build_datasets(name)  # no default root
        assert "--data-root" in one_line(e)


def test_error_missing_files(tmp_path):
    make_idx_dir(str(tmp_path / "idx"))
    os.remove(tmp_path / "idx" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as e:
        build_datasets("mnist", str(tmp_path / "idx"))
    assert "t10k-labels-idx1-ubyte" in one_line(e)
    d = make_cifar10_dir(str(tmp_path / "c10"))
    os.remove(os.path.join(d, "data_batch_3"))
    with pytest.raises(DataError) as e:
        build_datasets("cifar10", d)
    assert "data_batch_3" in one_line(e)
    os.makedirs(tmp_path / "c100")
    with pytest.raises(DataError) as e:
        build_datasets("cifar100", str(tmp_path / "c100"))
    assert "missing file train" in one_line(e)
    os.makedirs(tmp_path / "folder" / "train" / "a")
    with pytest.raises(DataError) as e:
        build_datasets("imagefolder", str(tmp_path / "folder"))
    assert "val" in one_line(e)


def test_error_corrupt_files(tmp_path):
    d = tmp_path / "idx"
    make_idx_dir(str(d), gz=False)
    # labels file where images are expected: wrong magic
    shutil.copy(d / "t10k-labels-idx1-ubyte", d / "t10k-images-idx3-ubyte")
    with pytest.raises(DataError) as e:
        build_datasets("mnist", str(d))
    msg = one_line(e)
    assert "magic" in msg and "t10k-images-idx3-ubyte" in msg
    # truncated data
    make_idx_dir(str(d), gz=False)
    with open(d / "train-images-idx3-ubyte", "r+b") as f:
        f.truncate(100)
    with pytest.raises(DataError) as e:
        build_datasets("mnist", str(d))
    assert "corrupt" in one_line(e)
    # not actually gzip
    g = tmp_path / "gz"
    make_idx_dir(str(g), gz=True)
    (g / "train-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError) as e:
        build_datasets("fashion_mnist", str(g))
    assert "train-labels-idx1-ubyte.gz" in one_line(e)
    # CIFAR: garbage pickle, and a pickle that would run code
    c = make_cifar10_dir(str(tmp_path / "c10"))
    with open(os.path.join(c, "test_batch"), "wb") as f:
        f.write(b"\x80\x02garbage")
    with pytest.raises(DataError) as e:
        build_datasets("cifar10", c)
    msg = one_line(e)
    assert "test_batch" in msg and "unpickling" in msg
    with open(os.path.join(c, "test_batch"), "wb") as f:
        pickle.dump({"data": os.system}, f)
    with pytest.raises(DataError) as e:
        build_datasets("cifar10", c)
    assert "refusing" in one_line(e)
    # CIFAR rows of the wrong width
    with open(os.path.join(c, "test_batch"), "wb") as f:
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, f)
    with pytest.raises(DataError) as e:
        build_datasets("cifar10", c)
    assert "3072" in one_line(e)


def test_error_corrupt_image(tmp_path):
    make_image_folder(str(tmp_path))
    (tmp_path / "val" / "cat" / "img0.png").write_bytes(b"not a png")
    b = build_datasets("imagefolder", str(tmp_path), image_size=8)
    with pytest.raises(DataError) as e:
        b.test[0]
    assert "img0.png" in one_line(e)


def test_error_empty_dataset(tmp_path):
    write_idx(str(tmp_path / "train-images-idx3-ubyte"), np.zeros((0, 28, 28)), gz=False)
    write_idx(str(tmp_path / "train-labels-idx1-ubyte"), np.zeros((0,)), gz=False)
    with pytest.raises(DataError) as e:
        build_datasets("mnist", str(tmp_path))
    assert "empty" in one_line(e)
    for split in ("train/a", "val/a"):
        os.makedirs(tmp_path / "f" / split)
    with pytest.raises(DataError) as e:
        build_datasets("imagefolder", str(tmp_path / "f"))
    assert "no images" in one_line(e)
    with pytest.raises(DataError) as e:
        build_datasets("synthetic", num_samples=0)
    assert "empty" in one_line(e)


def test_error_bad_arguments(tmp_path):
    with pytest.raises(DataError) as e:
        build_datasets("synthetic", num_samples=100, subset=1000)
    msg = one_line(e)
    assert "subset=1000" in msg and "90" in msg
    for bad in (1.0, -0.1, 1.5, "0.1"):
        with pytest.raises(DataError) as e:
            build_datasets("synthetic", val_fraction=bad)
        assert "val_fraction" in one_line(e)
    with pytest.raises(DataError) as e:
        build_datasets("synthetic", num_samples=3, num_classes=2, val_fraction=0.9)
    assert "no training examples" in one_line(e)
    for bad in (0, -5, 2.5, True):
        with pytest.raises(DataError) as e:
            build_datasets("synthetic", subset=bad)
        assert "subset" in one_line(e)
    with pytest.raises(DataError) as e:
        build_datasets("digits", label_mode="fine")
    assert "label_mode" in one_line(e) and "test_fraction" in one_line(e)
    with pytest.raises(DataError) as e:
        build_datasets("synthetic", in_channels=3, mean=(0.5, 0.5))
    assert "3 channels" in one_line(e)
    with pytest.raises(DataError) as e:
        build_loaders(build_datasets("synthetic", num_samples=20), batch_size=0)
    assert "batch_size" in one_line(e)


def test_overrides_mean_std_hflip(tmp_path):
    make_idx_dir(str(tmp_path))
    b = build_datasets("mnist", str(tmp_path), mean=0.5, std=0.5, hflip=True)
    assert b.mean == (0.5,) and b.std == (0.5,)
    assert any(isinstance(t, T.RandomHorizontalFlip) for t in b.train.transform.transforms)
    b = build_datasets("mnist", str(tmp_path))
    assert not any(isinstance(t, T.RandomHorizontalFlip) for t in b.train.transform.transforms)
    assert any(isinstance(t, T.RandomPadCrop) for t in b.train.transform.transforms)
    assert not any(isinstance(t, T.RandomPadCrop) for t in b.val.transform.transforms)


# ---------------------------------------------------------------------------
# the real thing, when the Debian package is installed


@pytest.mark.skipif(not os.path.isdir(FASHION_DEFAULT_ROOT), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist():
    b = build_datasets("fashion_mnist")
    assert len(b.train) + len(b.val) == 60000 and len(b.test) == 10000
    assert len(b.val) == 6000
    assert torch.bincount(b.test.targets, minlength=10).tolist() == [1000] * 10
    x, y = b.test[0]
    assert x.shape == (1, 32, 32) and y == 9  # first test image is an ankle boot
    assert isinstance(b.train, ArrayDataset) and b.train.images.dtype == torch.uint8
