"""Identical and near-identical images within a split and across splits: a test image that is also a
training image scores the model on what it learnt by heart (public medical sets ship such copies).

- **Identical**: the same decoded pixels (a BLAKE2b digest of the uint8 bytes), whatever the files'
  names or formats.
- **Near-identical**: a perceptual hash (pHash, as the `imagehash` package defines it: the 8 x 8
  lowest frequencies of a 32 x 32 grayscale DCT against their median, 64 bits) within
  `NEAR_HASH_BITS` bits finds candidates, and their 16 x 16 grayscale thumbnails must differ by at
  most `NEAR_MEAN_DIFF` (of 255) on average. Measured (tests/test_data_report.py and the docs): a
  copy saved at half the size or more and decoded back differs by at most 4.4 (noisy, smooth and
  noisy-smooth pictures; 5.9 at 0.4 of the size: missed), distinct pictures by 36 or more. The hash
  alone calls different handwritten ones of MNIST equal (14 of mnist_5k's 1,000 test digits hash to
  a training digit's exact pHash, 275 within 4 bits); with the thumbnails, 61 test digits remain,
  ones drawn alike that no eye tells from a training digit (data report's copies figure): what
  Barz and Denzler call near-duplicates when they purge CIFAR's test set of them (3.3% of CIFAR-10's).
  A rule that kept half-size copies and dropped those would need a finer scale than copies keep.

Pairs are compared 64 bits at a time with numpy's popcount, in blocks of ~16 M pairs, so 5,000 images
take ~0.1 s and the 60,000 x 10,000 of MNIST's train/test a few seconds.
"""

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch

from expframe.data.device_data import DeviceData
from expframe.data.image_store import ImageStore

# candidates: pHashes at most this many bits apart (of 64); copies saved at 0.25-0.6 of the size: <= 8
NEAR_HASH_BITS = 8
# confirmed: 16 x 16 grayscale thumbnails at most this far apart on average (0-255 scale)
NEAR_MEAN_DIFF = 5.0
_THUMB = 16
NEAR_RULE = (
    f"near-identical: pHash within {NEAR_HASH_BITS} of 64 bits and {_THUMB}x{_THUMB} grayscale thumbnails "
    f"within {NEAR_MEAN_DIFF:g}/255 on average"
)
_BLOCK_PAIRS = 1 << 24
BATCH_BYTES = 64 << 20
# candidate pairs whose thumbnails are compared at once: 65,536 x 256 floats x 2, 128 MB
_THUMB_PAIRS = 1 << 16


@dataclass
class Fingerprints:
    """One split's images, row for row: their pixel digests, pHashes and thumbnails."""

    digests: list[bytes]
    phashes: np.ndarray
    thumbs: torch.Tensor

    def __len__(self) -> int:
        return len(self.digests)


def _dct_matrix(n: int) -> torch.Tensor:
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None]
    return torch.cos(math.pi * (2 * i + 1) * k / (2 * n)).float()


_DCT32 = _dct_matrix(32)


def fingerprints(batches: Iterable[torch.Tensor]) -> Fingerprints:
    """uint8 images (N, C, H, W), batch after batch (a streamed set is never whole in memory)."""
    digests, phashes, thumbs = [], [], []
    for pixels in batches:
        pixels = pixels.cpu().contiguous()
        flat = pixels.reshape(len(pixels), -1).numpy()
        digests += [hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat]
        gray = pixels.float().mean(1, keepdim=True)
        small = torch.nn.functional.interpolate(gray, size=(32, 32), mode="bilinear", antialias=True)[:, 0]
        low = (_DCT32 @ small @ _DCT32.T)[:, :8, :8].reshape(len(pixels), 64)
        bits = (low > low.median(dim=1, keepdim=True).values).numpy()
        phashes.append(np.packbits(bits, axis=1).view(">u8")[:, 0].astype(np.uint64))
        thumb = torch.nn.functional.interpolate(gray, size=(_THUMB, _THUMB), mode="bilinear", antialias=True)
        thumbs.append(thumb.reshape(len(pixels), -1))
    if not digests:
        return Fingerprints([], np.zeros(0, np.uint64), torch.zeros(0, _THUMB * _THUMB))
    return Fingerprints(digests, np.concatenate(phashes), torch.cat(thumbs))


def near_pairs(a: Fingerprints, b: Fingerprints | None = None) -> list[tuple[int, int]]:
    """Near-identical pairs (i in a, j in b), identical ones included; with b None, the pairs i < j
    within a."""
    other = a if b is None else b
    if not len(a) or not len(other):
        return []
    block = max(1, _BLOCK_PAIRS // len(other))
    pairs = []
    for start in range(0, len(a), block):
        bits = np.bitwise_count(a.phashes[start : start + block, None] ^ other.phashes[None])
        rows, cols = np.nonzero(bits <= NEAR_HASH_BITS)
        rows = rows + start
        if b is None:
            keep = rows < cols
            rows, cols = rows[keep], cols[keep]
        for k in range(0, len(rows), _THUMB_PAIRS):  # candidates confirmed a bounded chunk at a time
            r, c = rows[k : k + _THUMB_PAIRS], cols[k : k + _THUMB_PAIRS]
            close = (a.thumbs[r] - other.thumbs[c]).abs().mean(dim=1).numpy() <= NEAR_MEAN_DIFF
            pairs += zip(r[close].tolist(), c[close].tolist(), strict=True)
    return pairs


def distinct(fp: Fingerprints) -> tuple[Fingerprints, np.ndarray]:
    """One image per distinct pixel digest, and for every image the index of its own among them:
    identical copies are found by their digests in linear time, and the pairwise search runs on what
    differs (a folder of 5,000 blank images is one image to it, not 12.5 M pairs)."""
    first: dict[bytes, int] = {}
    inverse = np.empty(len(fp), dtype=np.int64)
    keep: list[int] = []
    for i, digest in enumerate(fp.digests):
        if digest not in first:
            first[digest] = len(keep)
            keep.append(i)
        inverse[i] = first[digest]
    rows = np.asarray(keep, dtype=np.int64)
    return Fingerprints([fp.digests[i] for i in keep], fp.phashes[rows], fp.thumbs[torch.from_numpy(rows)]), inverse


def _joined(splits: dict[str, Fingerprints]) -> Fingerprints:
    return Fingerprints(
        [d for fp in splits.values() for d in fp.digests],
        np.concatenate([fp.phashes for fp in splits.values()]),
        torch.cat([fp.thumbs for fp in splits.values()]),
    )


@dataclass
class Group:
    """Images that are copies of one another: (split, row) members, identical or near-identical."""

    members: list[tuple[str, int]]
    identical: bool

    @property
    def splits(self) -> list[str]:
        return sorted({split for split, _ in self.members})


def groups(splits: dict[str, Fingerprints]) -> list[Group]:
    """Every group of two images or more, within and across the splits, largest first: identical
    pixels, or near-identical pairs joined transitively (a union-find over the pairs)."""
    nodes = [(name, i) for name, fp in splits.items() for i in range(len(fp))]
    every = _joined(splits)
    unique, inverse = distinct(every)
    parent = list(range(len(unique)))

    def find(k: int) -> int:
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    for i, j in near_pairs(unique):
        parent[find(i)] = find(j)
    members: dict[int, list[tuple[str, int]]] = {}
    for k, node in enumerate(nodes):
        members.setdefault(find(int(inverse[k])), []).append(node)
    found = []
    for group in members.values():
        if len(group) < 2:
            continue
        digests = {splits[name].digests[i] for name, i in group}
        found.append(Group(group, identical=len(digests) == 1))
    return sorted(found, key=lambda g: (-len(g.members), g.members))


@dataclass
class Leak:
    """Images of `split` with a copy in `other` (an earlier split: train before val before test)."""

    split: str
    other: str
    identical: int
    near: int


def leaks(splits: dict[str, Fingerprints]) -> list[Leak]:
    """Per pair of splits, how many images of the later one have an identical copy in the earlier one,
    and how many (of the rest) a near-identical one."""
    found = []
    names = list(splits)
    for x, earlier in enumerate(names):
        for later in names[x + 1 :]:
            a, b = splits[later], splits[earlier]
            seen = set(b.digests)
            exact = {i for i, digest in enumerate(a.digests) if digest in seen}
            (unique_a, inverse), (unique_b, _) = distinct(a), distinct(b)
            close = {i for i, j in near_pairs(unique_a, unique_b) if unique_a.digests[i] != unique_b.digests[j]}
            near = {i for i in range(len(a)) if int(inverse[i]) in close} - exact
            if exact or near:
                found.append(Leak(later, earlier, len(exact), len(near)))
    return found


def describe(leak: Leak) -> str:
    parts = []
    if leak.identical:
        parts.append(f"{leak.identical} identical")
    if leak.near:
        parts.append(f"{leak.near} near-identical")
    return f"{' and '.join(parts)} {leak.split} image(s) of {leak.other}"


def rows_per_batch(image_shape: tuple[int, ...]) -> int:
    """Images per fingerprinting batch: 64 MB of 8-bit pixels (256 MB as the floats they become), so
    4,096 digits or 445 RGB images of 224 x 224 at a time."""
    return max(1, min(4096, BATCH_BYTES // math.prod(image_shape)))


def pixel_batches(data: DeviceData, x: torch.Tensor | ImageStore, rows: range):
    """8-bit images of `x`'s `rows`, a batch at a time (a streamed store stays on the host)."""
    size = rows_per_batch(tuple(x.shape[1:]))
    for start in range(rows.start, rows.stop, size):
        idx = torch.arange(start, min(start + size, rows.stop))
        yield data.pixels(x, idx).cpu() if not isinstance(x, ImageStore) else x.images[start : idx[-1] + 1]


# keyed by the loaded data's id: device_data's cache holds every DeviceData for the process's life
_CHECKED: dict[int, list[Leak]] = {}


def run_leaks(data: DeviceData) -> list[Leak]:
    """The leaks a run's data hold, once per loaded data set in the process (a sweep's jobs share it):
    test against the training pool, and a fixed val/ split against train and test. A seeded
    validation split is drawn from the pool, so a copy inside the pool is the data report's to list."""
    key = id(data)
    if data.layout != "NCHW":
        return []
    if key not in _CHECKED:
        n = len(data.train_y)
        val = data.val_size or 0
        splits = {"train": range(0, n - val), "val": range(n - val, n)} if val else {"train": range(n)}
        prints = {name: fingerprints(pixel_batches(data, data.train_x, rows)) for name, rows in splits.items()}
        prints["test"] = fingerprints(pixel_batches(data, data.test_x, range(len(data.test_y))))
        _CHECKED[key] = leaks(prints)
    return _CHECKED[key]
