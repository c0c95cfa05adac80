"""Data sets held as normalised tensors on the training device, loaded once per process."""

from expframe.data.device_data import DeviceData, load, split_indices

__all__ = ["DeviceData", "load", "split_indices"]
