"""Data sets held as normalised tensors on the training device, loaded once per process.

Imports: record (atomic writes of the decode cache) and the ground (errors, build)."""

from expframe.data.device_data import DeviceData, load, split_indices, take
from expframe.data.image_store import ImageStore

__all__ = ["DeviceData", "ImageStore", "load", "split_indices", "take"]
