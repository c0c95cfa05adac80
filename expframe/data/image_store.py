"""uint8 images normalised per batch on the device: a quarter of float32's memory, so a data set that
would not fit as floats stays resident (5,856 X-rays at 224x224 grayscale: 0.3 GB, not 1.2 GB).

Indexing (`store[idx]`, `store[a:b]`) returns the normalised float32 batch on the device, like the
float tensors of the other data sets, so the step, evaluation and every other reader are unchanged.
A streamed store keeps the images on the host (the memory-mapped cache) and moves each batch;
`batches` feeds an epoch through a DataLoader (workers gather, pinned memory, prefetch). Both paths
normalise the same uint8 values with the same arithmetic, so they give the same results.
"""

from collections.abc import Iterator

import torch


class _Batches(torch.utils.data.Dataset):
    """Item i is the i-th batch of an epoch's order, gathered in a worker."""

    def __init__(self, images: torch.Tensor, chunks: list[torch.Tensor]) -> None:
        self.images, self.chunks = images, chunks

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images.index_select(0, self.chunks[i])


class ImageStore:
    def __init__(
        self,
        images: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        device: torch.device,
        streamed: bool = False,
        workers: int = 0,
    ) -> None:
        """`mean`, `std`: per channel, shaped (1, C, 1, 1), on the uint8 scale (0-255)."""
        self.device, self.streamed, self.workers = device, streamed, workers
        self.images = images if streamed else images.to(device)
        self.mean, self.std = mean, std
        self.scale = (1.0 / std).to(device)
        self.shift = (mean / std).to(device)

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def __len__(self) -> int:
        return len(self.images)

    def normalise(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.to(self.device, non_blocking=True).float().mul_(self.scale).sub_(self.shift)

    def __getitem__(self, key: torch.Tensor | slice) -> torch.Tensor:
        if isinstance(key, torch.Tensor):
            key = key.to(self.images.device)
        batch = self.images[key]
        if self.streamed and self.device.type == "cuda":
            batch = batch.pin_memory()
        return self.normalise(batch)

    def subset(self, idx: torch.Tensor) -> "ImageStore":
        return ImageStore(
            self.images[idx.to(self.images.device)], self.mean, self.std, self.device, self.streamed, self.workers
        )

    def batches(self, order: torch.Tensor, batch_size: int, n: int) -> Iterator[torch.Tensor]:
        """The epoch's normalised batches in `order` (its first n samples), prefetched by workers."""
        chunks = list(order[:n].cpu().split(batch_size))
        loader = torch.utils.data.DataLoader(
            _Batches(self.images, chunks),
            batch_size=None,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            prefetch_factor=4 if self.workers else None,
        )
        for batch in loader:
            yield self.normalise(batch)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std per channel over every pixel, in float64 chunks (no float copy of the whole set)."""
    channels = images.shape[1]
    total = torch.zeros(channels, dtype=torch.float64)
    squares = torch.zeros(channels, dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start : start + chunk].to(torch.float64)
        total += part.sum(dim=(0, 2, 3))
        squares += part.square().sum(dim=(0, 2, 3))
    count = images.numel() / channels
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6)
    return mean.float().view(1, -1, 1, 1), std.float().view(1, -1, 1, 1)
