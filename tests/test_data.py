"""Data specs: shapes, channels, seeded splits and loaders, IDX and image-folder readers, clear errors."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys

import numpy as np
import pytest
import torch

import hwnas.data
from hwnas.data import DATA_SETS, FASHION_MNIST_DIR, load_data, make_loader, natural_space_args, split_for_arch
from hwnas.errors import HwnasError


def test_the_digits_are_scikit_learns_whether_read_from_its_file_or_by_its_loader(monkeypatch):
    from sklearn.datasets import load_digits

    reference = load_digits()
    for found in (True, False):  # the file beside scikit-learn, then no file found: its own loader
        if not found:
            monkeypatch.setattr(hwnas.data.importlib.util, "find_spec", lambda name: None)
        images, labels = hwnas.data._digits_arrays()
        assert images.shape == (1797, 8, 8) and np.array_equal(images, reference.images), found
        assert np.array_equal(labels, reference.target) and labels.dtype == np.int64, found
    code = "import sys, hwnas.data; hwnas.data.load_data('digits', 8, 1); print('sklearn' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


def test_digits_resized_to_the_space_with_a_seeded_split():
    data = load_data("digits", resolution=32, in_channels=1, seed=0)
    image, label = data.train[0]
    assert image.shape == (1, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    assert len(data.train) + len(data.val) == 1797 and data.num_classes == 10
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0
    again, other = load_data("digits", 32, 1, seed=0), load_data("digits", 32, 1, seed=1)
    assert torch.equal(again.train.images, data.train.images)
    assert not torch.equal(other.train.labels, data.train.labels)


def test_channels_adapt_both_ways():
    colour = load_data("digits", 16, 3)
    image, _ = colour.train[0]
    assert image.shape == (3, 16, 16) and torch.equal(image[0], image[2])
    grey = load_data("fake", 16, 1)
    assert grey.train[0][0].shape == (1, 16, 16)
    with pytest.raises(HwnasError, match="channels"):
        load_data("fake", 16, 2)


def test_natural_space_args():
    assert natural_space_args("digits") == {"in_channels": 1, "num_classes": 10, "resolution": 32}
    assert natural_space_args("cifar10:/nowhere")["in_channels"] == 3


@pytest.mark.parametrize(
    "spec, message",
    [
        ("mnist", "unknown data spec"),
        ("cifar10", "needs a folder"),
        ("digits:/x", "takes no folder"),
        ("imagefolder:", "empty folder"),
        ("fashion-mnist:/does/not/exist", "does not exist"),
    ],
)
def test_bad_specs_are_clear_errors(spec, message):
    with pytest.raises(HwnasError, match=message):
        load_data(spec, 32, 1)


@pytest.mark.parametrize("name", list(DATA_SETS))
def test_every_data_set_loads_as_it_says_or_asks_for_its_folder(name, tmp_path):
    """Each registered data set keeps its promise about the folder after ':' and the shape it has."""
    data_set = DATA_SETS[name]
    if data_set.folder == "none":
        data = load_data(name, 16, data_set.in_channels)
        assert data.num_classes == data_set.num_classes and data.train[0][0].shape == (data_set.in_channels, 16, 16)
        assert len(data.train) > len(data.val) > 0
        assert natural_space_args(name)["num_classes"] == data_set.num_classes
        with pytest.raises(HwnasError, match="takes no folder"):
            load_data(f"{name}:{tmp_path}", 16, 1)
    else:
        if data_set.folder == "required":
            with pytest.raises(HwnasError, match="needs a folder"):
                load_data(name, 16, 1)
        with pytest.raises(HwnasError, match=str(tmp_path / "missing")):
            load_data(f"{name}:{tmp_path / 'missing'}", 16, data_set.in_channels)


def write_idx(path, data: torch.Tensor) -> None:
    header = struct.pack(">HBB", 0, 0x08, data.dim()) + struct.pack(">" + "I" * data.dim(), *data.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + data.to(torch.uint8).numpy().tobytes())


def test_fashion_mnist_idx_files(tmp_path):
    generator = torch.Generator().manual_seed(0)
    for prefix, n in (("train", 20), ("t10k", 6)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", torch.randint(0, 256, (n, 28, 28), generator=generator))
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", torch.arange(n) % 10)
    data = load_data(f"fashion-mnist:{tmp_path}", 32, 1)
    assert len(data.train) == 20 and len(data.val) == 6
    assert data.train[0][0].shape == (1, 32, 32) and data.val[3][1] == 3
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x09abc"))
    with pytest.raises(HwnasError, match="cannot read IDX"):
        load_data(f"fashion-mnist:{tmp_path}", 32, 1)


@pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason=f"no Fashion-MNIST in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)"
)
def test_the_real_fashion_mnist_has_its_published_sizes():
    """Debian's package, as CI installs it: 60,000 training and 10,000 test images of 28x28, 6,000 and 1,000 per class."""
    data = load_data("fashion-mnist", 28, 1)
    assert (len(data.train), len(data.val), data.num_classes) == (60000, 10000, 10)
    assert data.train[0][0].shape == (1, 28, 28)
    assert torch.bincount(torch.tensor([int(label) for _, label in data.val])).tolist() == [1000] * 10


def test_imagefolder_counts_classes_and_holds_out_validation(tmp_path):
    from PIL import Image

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(10):
            Image.new("RGB", (12, 10), (i * 20, 0, 0)).save(tmp_path / name / f"{i}.png")
    assert natural_space_args(f"imagefolder:{tmp_path}")["num_classes"] == 2
    data = load_data(f"imagefolder:{tmp_path}", 16, 3)
    assert len(data.train) == 18 and len(data.val) == 2 and data.train[0][0].shape == (3, 16, 16)


def test_loaders_and_arch_split_are_seeded():
    data = load_data("digits", 8, 1)
    order = lambda seed: torch.cat([labels for _, labels in make_loader(data.train, 64, True, seed=seed)])  # noqa: E731
    assert torch.equal(order(3), order(3)) and not torch.equal(order(3), order(4))
    weights, arch = split_for_arch(data.train, 0.25, seed=0)
    assert len(arch) == round(0.25 * len(data.train)) and len(weights) + len(arch) == len(data.train)
    assert not set(weights.indices) & set(arch.indices)
    assert split_for_arch(data.train, 0.0)[1] is None
    with pytest.raises(HwnasError, match="arch-fraction"):
        split_for_arch(data.train, 1.0)
    with pytest.raises(HwnasError, match="batch size"):
        make_loader(data.train, 0, True)
