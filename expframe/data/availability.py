"""Before a sweep's first job: do the data's files exist? Sources that read files (torchvision sets,
image folders) are opened far enough to tell; nothing is loaded."""

from omegaconf import DictConfig, OmegaConf

from expframe.data.image_folder import check_decoding, check_headers, list_files
from expframe.data.mvtec import category_folder, check_split, list_mvtec
from expframe.data.sources import open_torchvision


def check_available(source: DictConfig) -> None:
    """Before a sweep's first job: files that are missing (and cannot be downloaded) are a config error.

    Only sources that read files have something to check; nothing is normalised or put on a device
    here, so a launcher's parent process holds no copy of the data while its workers train.
    """
    if source.get("_target_") == "expframe.data.sources.torchvision_set":
        open_torchvision(source.dataset_class, source.root, source.download)
    if source.get("_target_") == "expframe.data.image_folder.image_folder":
        classes = OmegaConf.to_container(source.classes) if source.classes else None
        _, files, _ = list_files(source.root, classes, bool(source.get("strict")))
        if source.get("strict"):  # every file's header, so strict refuses before the run folder exists
            check_headers(files, source.get("max_pixels"))
    if source.get("_target_") == "expframe.data.mvtec.mvtec":
        check_decoding(source.image_size, source.channels)
        shares = check_split(source.split)
        folder = category_folder(source.root, source.category)
        files = list_mvtec(folder, shares, source.split_seed, bool(source.get("strict")))
        if source.get("strict"):
            check_headers(files, source.get("max_pixels"))
