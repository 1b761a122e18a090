"""Data sets for search and training, resized to the space's resolution and channel count.

``--data`` specs:

* ``digits`` (default): scikit-learn's embedded 8x8 handwritten digits (1797 images, 10
  classes). Nothing to download, so every command works offline on any machine.
* ``fashion-mnist[:DIR]``: IDX files (gzipped or not) in DIR, by default where Debian's
  ``dataset-fashion-mnist`` package puts them.
* ``cifar10:DIR``: torchvision's CIFAR-10 python batches already in DIR (never downloaded).
* ``imagefolder:DIR``: one sub-folder per class; ``DIR/train`` and ``DIR/val`` when present,
  else a seeded 10 % of DIR is held out for validation.
* ``fake``: seeded random images whose class shifts their mean, for smoke tests.

Small in-memory sets are resized once and kept as uint8 tensors, so an epoch costs no
decoding; only ``imagefolder`` decodes lazily.
"""

from __future__ import annotations

import gzip
import importlib.util
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset

from hwnas.distributed import SINGLE, Dist, ShardSampler, split_batch
from hwnas.errors import HwnasError
from hwnas.registry import Registry

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: (train, val) pairs of uint8 images [N, C, H, W] and labels [N]
Tensors = tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DataSet:
    """One ``--data`` name: what may follow its ':', the shape it naturally has, where its images come from."""

    name: str
    #: the folder after ':': "none" (refused), "optional" or "required"
    folder: str
    in_channels: int
    #: None: not known until the folder is read (image folders)
    num_classes: int | None
    resolution: int | None
    #: (folder or None, seed) -> the whole set in memory; None: decoded lazily (``imagefolder``)
    tensors: Callable[[str | None, int], Tensors] | None

    @property
    def spec(self) -> str:
        return self.name + {"none": "", "optional": "[:DIR]", "required": ":DIR"}[self.folder]


@dataclass
class DataSplits:
    """Training and validation sets of one data spec, already shaped for the space."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_channels: int
    name: str


class ImageTensorDataset(Dataset):
    """uint8 images [N, C, H, W] + int labels; items are normalised float tensors."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float = 0.5, std: float = 0.5) -> None:
        self.images, self.labels = images, labels.long()
        self.mean, self.std = mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index].float().div_(255.0).sub_(self.mean).div_(self.std)
        return image, int(self.labels[index])


def _split_spec(spec: str) -> tuple[str, str | None]:
    name, sep, arg = spec.partition(":")
    name = name.strip().lower()
    if name not in DATA_SETS:
        raise HwnasError(f"unknown data spec {spec!r}; known: {', '.join(d.spec for d in DATA_SETS.values())}")
    if sep and not arg:
        raise HwnasError(f"data spec {spec!r} has an empty folder after ':'")
    if DATA_SETS[name].folder == "required" and not arg:
        raise HwnasError(f"data spec {name!r} needs a folder: {name}:DIR")
    if DATA_SETS[name].folder == "none" and arg:
        raise HwnasError(f"data spec {name!r} takes no folder")
    return name, arg or None


def natural_space_args(spec: str) -> dict[str, Any]:
    """The space options a data set implies (in_channels, num_classes, resolution), where known.

    ``hwnas search`` fills the space options the user did not give from this, so a search on
    the default digits runs a 1-channel, 10-class net at 32x32 without any flag.
    """
    name, arg = _split_spec(spec)
    data_set = DATA_SETS[name]
    num_classes = data_set.num_classes if data_set.num_classes is not None else len(_imagefolder_classes(Path(arg)))
    found = {"in_channels": data_set.in_channels, "num_classes": num_classes, "resolution": data_set.resolution}
    return {key: value for key, value in found.items() if value is not None}


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """uint8 [N, C, h, w] -> uint8 [N, C, resolution, resolution], bilinear with antialiasing."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    out = []
    for chunk in images.split(4096):
        resized = F.interpolate(
            chunk.float(), size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False
        )
        out.append(resized.round().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _adapt_channels(images: torch.Tensor, in_channels: int, source: str) -> torch.Tensor:
    """Grey -> colour by repetition, colour -> grey by the channel mean; anything else is an error."""
    have = images.shape[1]
    if have == in_channels:
        return images
    if have == 1:
        return images.expand(-1, in_channels, -1, -1).contiguous()
    if in_channels == 1:
        return images.float().mean(dim=1, keepdim=True).round().to(torch.uint8)
    raise HwnasError(f"{source} has {have} channels; the space wants {in_channels} (only 1 <-> N is adapted)")


def _tensor_splits(train: tuple, val: tuple, resolution: int, in_channels: int, num_classes: int, name: str) -> DataSplits:
    def build(images: torch.Tensor, labels: torch.Tensor) -> ImageTensorDataset:
        return ImageTensorDataset(_adapt_channels(_resize(images, resolution), in_channels, name), labels)

    return DataSplits(build(*train), build(*val), num_classes, in_channels, name)


def _seeded_split(n: int, val_fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_val = max(1, int(round(n * val_fraction)))
    return order[n_val:], order[:n_val]


# -- the sources ------------------------------------------------------------------------------
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits: 1,797 images of 8x8 values 0..16 and their labels.

    Read from the file scikit-learn's ``load_digits`` reads (``datasets/data/digits.csv.gz``: 64 values and the
    label a row) without importing scikit-learn, which took about 1.2 s of every command on the digits; scikit-learn's
    own loader where that file is not found (``tests/test_data.py`` checks both against it).
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    folders = (spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            table = np.loadtxt(path, delimiter=",")
            return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits  # seconds to import (tests/test_imports.py)

    digits = load_digits()
    return digits.images, digits.target


def _digits(seed: int) -> tuple[tuple, tuple]:
    values, target = _digits_arrays()
    # values 0..16 -> 0..255
    images = torch.from_numpy(values).float().mul(255.0 / 16.0).round().to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(target).long()
    train, val = _seeded_split(len(labels), 0.2, seed)
    return (images[train], labels[train]), (images[val], labels[val])


def _read_idx(path: Path) -> torch.Tensor:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
        zero, dtype, dims = struct.unpack(">HBB", data[:4])
        if zero != 0 or dtype != 0x08:
            raise ValueError("not an unsigned-byte IDX file")
        shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
        body = data[4 + 4 * dims :]
        if len(body) != int(torch.tensor(shape).prod()):
            raise ValueError(f"expected {shape} bytes of data, found {len(body)}")
    except (OSError, ValueError, struct.error, EOFError) as error:
        raise HwnasError(f"cannot read IDX file {path}: {error}") from None
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise HwnasError(
        f"Fashion-MNIST file {stem}[.gz] not found in {folder}; install Debian's dataset-fashion-mnist "
        f"package or pass fashion-mnist:DIR"
    )


def _fashion_mnist(folder: Path) -> tuple[tuple, tuple]:
    if not folder.is_dir():
        raise HwnasError(f"Fashion-MNIST folder {folder} does not exist; install dataset-fashion-mnist or pass fashion-mnist:DIR")
    parts = []
    for prefix in ("train", "t10k"):
        images = _read_idx(_find_idx(folder, f"{prefix}-images-idx3-ubyte")).unsqueeze(1)
        labels = _read_idx(_find_idx(folder, f"{prefix}-labels-idx1-ubyte")).long()
        parts.append((images, labels))
    return parts[0], parts[1]


def _cifar10(folder: Path) -> tuple[tuple, tuple]:
    from torchvision.datasets import CIFAR10  # seconds to import (it loads torch._dynamo): only where CIFAR-10 is read

    parts = []
    for train in (True, False):
        try:
            data = CIFAR10(str(folder), train=train, download=False)
        except RuntimeError as error:
            raise HwnasError(
                f"CIFAR-10 not found in {folder} ({error}); put the python batches (cifar-10-batches-py) there"
            ) from None
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
        parts.append((images, torch.tensor(data.targets)))
    return parts[0], parts[1]


def _fake(seed: int, n_train: int = 512, n_val: int = 128) -> tuple[tuple, tuple]:
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 10, (n_train + n_val,), generator=generator)
    noise = torch.randint(0, 128, (n_train + n_val, 3, 16, 16), generator=generator)
    images = (noise + labels.view(-1, 1, 1, 1) * 12).clamp(0, 255).to(torch.uint8)
    return (images[:n_train], labels[:n_train]), (images[n_train:], labels[n_train:])


def _imagefolder_classes(folder: Path) -> list[str]:
    root = folder / "train" if (folder / "train").is_dir() else folder
    if not root.is_dir():
        raise HwnasError(f"image folder {folder} does not exist")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise HwnasError(f"image folder {root} has no class sub-folders")
    return classes


def scan_image_folder(root: Path) -> None:
    """Refuse, before any training, an image folder with a class sub-folder that holds no image or with files that
    do not decode (a text file named ``.png``, a truncated JPEG); the message lists them.

    Every image is decoded once (JPEGs at a reduced scale, ``Image.draft``: the whole stream is
    still read, so a cut-short file is found); files whose extension torchvision does not read
    as an image are skipped, as ``ImageFolder`` skips them.
    """
    from torchvision.datasets.folder import IMG_EXTENSIONS

    empty, unreadable = [], []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in class_dir.rglob("*") if p.is_file() and p.suffix.lower() in IMG_EXTENSIONS)
        if not files:
            empty.append(class_dir.name)
        for path in files:
            try:
                with Image.open(path) as image:
                    image.draft("RGB", (1, 1))
                    image.load()
            except Exception as error:  # noqa: BLE001 - PIL raises many types for foreign or cut-short files
                unreadable.append(f"{path.relative_to(root)} ({' '.join(str(error).split())[:80] or type(error).__name__})")
    if empty:
        raise HwnasError(
            f"image folder {root}: class folder(s) {', '.join(empty)} hold no image ({', '.join(sorted(IMG_EXTENSIONS))}); "
            "add images or remove the folder"
        )
    if unreadable:
        shown = "; ".join(unreadable[:10]) + (f"; and {len(unreadable) - 10} more" if len(unreadable) > 10 else "")
        raise HwnasError(
            f"image folder {root}: {len(unreadable)} file(s) cannot be read as images: {shown}; remove or replace them"
        )


def _imagefolder(folder: Path, resolution: int, in_channels: int, seed: int) -> DataSplits:
    from torchvision import datasets, transforms  # as in _cifar10

    steps: list[Any] = [transforms.Resize((resolution, resolution))]
    if in_channels == 1:
        steps.append(transforms.Grayscale(1))
    elif in_channels != 3:
        raise HwnasError(f"imagefolder data gives 1 or 3 channels; the space wants {in_channels}")
    steps += [transforms.ToTensor(), transforms.Normalize([0.5] * in_channels, [0.5] * in_channels)]
    transform = transforms.Compose(steps)
    classes = _imagefolder_classes(folder)
    split = (folder / "train").is_dir() and (folder / "val").is_dir()
    for root in (folder / "train", folder / "val") if split else (folder,):
        scan_image_folder(root)
    if split:
        train = datasets.ImageFolder(str(folder / "train"), transform=transform)
        val = datasets.ImageFolder(str(folder / "val"), transform=transform)
    else:
        full = datasets.ImageFolder(str(folder), transform=transform)
        train_idx, val_idx = _seeded_split(len(full), 0.1, seed)
        train, val = Subset(full, train_idx.tolist()), Subset(full, val_idx.tolist())
    return DataSplits(train, val, len(classes), in_channels, f"imagefolder:{folder}")


def load_data(spec: str, resolution: int, in_channels: int, seed: int = 0) -> DataSplits:
    """The train and validation sets of ``spec``, resized to ``resolution`` with ``in_channels``."""
    name, arg = _split_spec(spec)
    tensors = DATA_SETS[name].tensors
    if tensors is None:
        return _imagefolder(Path(arg), resolution, in_channels, seed)
    train, val = tensors(arg, seed)
    return _tensor_splits(train, val, resolution, in_channels, DATA_SETS[name].num_classes, spec)


#: every ``--data`` name; the only list of them
DATA_SETS: Registry[DataSet] = Registry(
    "data set",
    (
        DataSet("digits", "none", 1, 10, 32, lambda folder, seed: _digits(seed)),
        DataSet(
            "fashion-mnist",
            "optional",
            1,
            10,
            32,
            lambda folder, seed: _fashion_mnist(Path(folder) if folder else FASHION_MNIST_DIR),
        ),
        DataSet("cifar10", "required", 3, 10, 32, lambda folder, seed: _cifar10(Path(folder))),
        DataSet("imagefolder", "required", 3, None, None, None),
        DataSet("fake", "none", 3, 10, 32, lambda folder, seed: _fake(seed)),
    ),
)


def split_for_arch(dataset: Dataset, arch_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset | None]:
    """Hold ``arch_fraction`` of the training set out for architecture steps (ProxylessNAS).

    The split is seeded, so a resumed run sees the same halves. ``arch_fraction == 0`` gives
    no held-out set (the single-level methods train weights and alpha on the same batch).
    """
    if not 0 <= arch_fraction < 1:
        raise HwnasError(f"--arch-fraction must be in [0, 1), got {arch_fraction}")
    if arch_fraction == 0:
        return dataset, None
    weight_idx, arch_idx = _seeded_split(len(dataset), arch_fraction, seed + 7919)
    return Subset(dataset, weight_idx.tolist()), Subset(dataset, arch_idx.tolist())


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0, dist: Dist = SINGLE, trim: bool = True
) -> DataLoader:
    """A loader whose order depends only on ``seed``: the same seed gives the same batches.

    With ``dist`` of several processes, this rank's shard of every global batch of
    ``batch_size`` (``hwnas.distributed.ShardSampler``; ``trim``: every shard the same size).
    """
    if batch_size < 1:
        raise HwnasError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise HwnasError(f"workers must be >= 0, got {workers}")
    if dist.active:
        return DataLoader(
            dataset,
            batch_size=split_batch(batch_size, dist),
            sampler=ShardSampler(dataset, dist, shuffle, seed, trim=trim),
            num_workers=workers,
            generator=torch.Generator().manual_seed(seed),
            drop_last=False,
            persistent_workers=False,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=torch.Generator().manual_seed(seed),
        drop_last=False,
        persistent_workers=False,
    )
