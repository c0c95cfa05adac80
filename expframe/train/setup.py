"""Set-up of a run: every component built once from the config (data on the device, model, optimizer,
loss, precision, the step), before the first clock starts. The one place of the run, besides
`train()`, that reads the whole config; what it builds carries only the settings the loop needs."""

import hashlib
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from expframe.build import build
from expframe.data.device_data import DeviceData, load, split_indices, take
from expframe.data.duplicates import NEAR_RULE, describe, run_leaks
from expframe.errors import ConfigError
from expframe.measure.clocks import StepClock
from expframe.measure.memory import PeakMemory
from expframe.models.contract import ModelInputs, build_model
from expframe.train import retrain
from expframe.train.augment import build_augment, mixes
from expframe.train.loop import Run
from expframe.train.losses import build_loss, class_weights
from expframe.train.runtime import autocast, seed_everything
from expframe.train.steps import GraphedStep, eager_step

log = logging.getLogger(__name__)

# the smallest validation split a run measures on (a seeded val_fraction of the training set)
MIN_VAL_SAMPLES = 5
Split = tuple[torch.Tensor, torch.Tensor]


def model_inputs(data: DeviceData) -> ModelInputs:
    return ModelInputs(data.input_shape, data.num_classes)


def weights_hash(model: nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_optimizer(optimizer: DictConfig, model: nn.Module, capturable: bool) -> torch.optim.Optimizer:
    """`capturable`: a CUDA graph needs optimizer state on the device; SGD has no such flag and needs none."""
    factory, params = build(optimizer), list(model.parameters())
    if capturable:
        try:
            return factory(params, capturable=True)
        except TypeError:
            pass
    return factory(params)


def setup(cfg: DictConfig, device: torch.device, out_dir: Path, split: Split | None = None) -> Run:
    """The peak-memory window opens before the data load: the data are part of what a run costs.
    `split`: (train, validation) indices into the training set, a cross-validation fold; by default
    the seeded `dataset.val_fraction` split."""
    memory = PeakMemory(device)
    memory.reset()
    data = load(cfg.dataset, device)
    declared = (tuple(cfg.dataset.input_shape), cfg.dataset.num_classes)
    if (data.input_shape, data.num_classes) != declared:
        raise ConfigError(
            "dataset.input_shape",
            list(declared[0]),
            f"with num_classes={declared[1]} was declared; the loaded data have {list(data.input_shape)} "
            f"and {data.num_classes} classes",
        )
    for leak in run_leaks(data):
        # an identical copy is a leak for certain; near-identical ones may be images drawn alike
        level = logging.WARNING if leak.identical else logging.INFO
        log.log(level, "data leak: %s (%s); expframe-data lists them", describe(leak), NEAR_RULE)
    retraining = None
    if retrain.chosen(cfg.get("retrain")):
        if split is not None:
            raise ConfigError("retrain.from", cfg.retrain["from"], "cannot be cross-validated (cv.folds is set)")
        resize = cfg.dataset.get("image_size") is not None
        data, split, retraining = retrain.retrain_data(cfg.retrain, data, cfg.dataset.val_fraction, cfg.seed, resize)
    split = split or split_indices(len(data.train_y), cfg.dataset.val_fraction, cfg.seed, data.val_size)
    train_idx, val_idx = (i.to(device) for i in split)
    if len(train_idx) < 2:
        raise ConfigError(
            "dataset.val_fraction",
            cfg.dataset.val_fraction,
            f"leaves {len(train_idx)} of {len(data.train_y)} training samples to train on; use a smaller fraction",
        )
    if not data.val_size and len(val_idx) < MIN_VAL_SAMPLES:
        raise ConfigError(
            "dataset.val_fraction",
            cfg.dataset.val_fraction,
            f"leaves {len(val_idx)} of {len(data.train_y)} samples to validate on; at least {MIN_VAL_SAMPLES} are "
            f"needed (one sample fewer or more must not move the validation accuracy by over 20 points)",
        )
    if cfg.batch_size >= len(train_idx):
        log.info(
            "batch_size=%d covers all %d training samples: each epoch is one full batch", cfg.batch_size, len(train_idx)
        )
    weights = class_weights(cfg.loss, data.train_y[train_idx], data.num_classes)
    loss_fn = build_loss(cfg.loss, data.num_classes, device, weights)
    if cfg.augment.name != "none" and data.layout != "NCHW":
        raise ConfigError(
            "augment", cfg.augment.name, f"needs images (NCHW); dataset={cfg.dataset.name} is {data.layout}"
        )
    augment = build_augment(cfg.augment, cfg.seed, device, data.num_classes, data.batch_pixels, data.normalise_pixels)
    seed_everything(cfg.seed)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    net = build_model(cfg.model, cfg.activation, cfg.init, model_inputs(data)).to(device, memory_format=memory_format)
    if retraining is not None:
        net.load_state_dict(retraining.parent_weights)
    init_hash = weights_hash(net)
    model = torch.compile(net) if cfg.compile else net
    optimizer = build_optimizer(retrain.optimizer_settings(cfg), model, cfg.cuda_graphs)
    scheduler = build(cfg.scheduler)(optimizer) if cfg.scheduler.get("_target_") else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.precision.grad_scaler)
    amp = autocast(cfg.precision, device)
    step = eager_step(model, optimizer, scaler, loss_fn, data, amp, memory_format, augment)
    if cfg.cuda_graphs and data.streamed:
        raise ConfigError("cuda_graphs", True, "needs the data resident; raise dataset.resident_max_mb")
    if cfg.cuda_graphs:
        step = GraphedStep(step, optimizer, cfg.batch_size, device)
    return Run(
        device=device,
        data=data,
        train_idx=train_idx,
        val_x=take(data.train_x, val_idx),
        val_y=data.train_y[val_idx],
        net=net,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        loss_fn=loss_fn,
        amp=amp,
        step=step,
        memory=memory,
        init_hash=init_hash,
        clock=StepClock(device),
        threads=torch.get_num_threads(),  # the run sets its own once it has read the machine's load
        scaler=scaler,
        batch_order=torch.Generator().manual_seed(cfg.seed),
        out_dir=out_dir,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        compiled=cfg.compile,
        checkpoint_every=cfg.checkpoint.every,
        early_stopping=cfg.early_stopping,
        config=OmegaConf.to_container(cfg, resolve=True) if cfg.checkpoint.every else None,
        augment=augment,
        soft_targets=mixes(cfg.augment),
        class_weights=weights,
        retraining=retraining,
    )
