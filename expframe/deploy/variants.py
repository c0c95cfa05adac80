"""The served forms of a trained model: eager fp32 (the reference), dynamic int8, L1-pruned, and
ONNX Runtime fp32 and int8. Each is a `Variant`: a predict function over a CPU batch and what its
file costs on disk."""

import copy
import io
import logging
import warnings
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.utils import prune

log = logging.getLogger("expframe")

Predict = Callable[[np.ndarray], np.ndarray]
KINDS = ("fp32", "int8_dynamic", "pruned", "onnx_fp32", "onnx_int8")
PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class Variant:
    name: str
    predict: Predict
    # the served file: a torch state_dict, or the .onnx file; compressed with zlib (level 6)
    size_bytes: int
    compressed_bytes: int
    nonzero_fraction: float | None = None
    note: str | None = None
    # ONNX Runtime's session, for the load test
    session: object = None


def _sizes(blob: bytes) -> tuple[int, int]:
    return len(blob), len(zlib.compress(blob, 6))


def _state_bytes(model: nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def _torch_predict(model: nn.Module) -> Predict:
    model.eval()

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    return predict


def fp32(model: nn.Module) -> Variant:
    return Variant("fp32", _torch_predict(model), *_sizes(_state_bytes(model)))


def has_convolutions(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in model.modules())


def int8_dynamic(model: nn.Module) -> Variant:
    """torch.ao's dynamic quantisation of Linear layers (int8 weights, activations quantised per
    batch). Deprecated in favour of torchao, whose int8 path was measured slower on the CPU at
    batch 1 here (docs/serving-cost.md). Convolutions are not covered: they stay fp32."""
    with quiet():
        quantised = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {nn.Linear}, dtype=torch.qint8)
    note = "Conv layers stay fp32: dynamic quantisation covers Linear only" if has_convolutions(model) else None
    return Variant("int8_dynamic", _torch_predict(quantised), *_sizes(_state_bytes(quantised)), note=note)


def pruned(model: nn.Module, amount: float) -> Variant:
    """Global L1 unstructured pruning over every Linear and Conv weight, made permanent. The dense
    file does not shrink (zeros are stored); the compressed size and the non-zero share show the gain."""
    clone = copy.deepcopy(model)
    targets = [(m, "weight") for m in clone.modules() if isinstance(m, PRUNABLE)]
    prune.global_unstructured(targets, pruning_method=prune.L1Unstructured, amount=amount)
    for module, name in targets:
        prune.remove(module, name)
    weights = [m.weight for m, _ in targets]
    nonzero = sum(int(w.count_nonzero()) for w in weights) / sum(w.numel() for w in weights)
    return Variant(f"pruned_{amount:g}", _torch_predict(clone), *_sizes(_state_bytes(clone)), nonzero_fraction=nonzero)


@contextmanager
def quiet() -> Iterator[None]:
    """The exporter's passes log at INFO (`onnx_ir`) and ONNX Runtime's quantiser logs advice on the
    root logger; a run's log keeps expframe's lines only."""
    root, passes = logging.getLogger(), logging.getLogger("onnx_ir")
    levels = root.level, passes.level
    root.setLevel(logging.ERROR)
    passes.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(levels[0])
        passes.setLevel(levels[1])


def export_onnx(model: nn.Module, sample: torch.Tensor, path: Path) -> None:
    """The dynamo exporter, one self-contained file (no external .data), the batch dimension
    dynamic, checked with onnx.checker; quiet (it reports progress otherwise)."""
    import onnx

    batch = torch.export.Dim("batch", min=1)
    with quiet():
        program = torch.onnx.export(
            model.eval(),
            (sample,),
            dynamo=True,
            dynamic_shapes=({0: batch},),
            input_names=["x"],
            output_names=["logits"],
            verbose=False,
            report=False,
        )
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))


def onnx_session(path: Path, threads: int, name: str) -> Variant:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def predict(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": x})[0]

    return Variant(name, predict, *_sizes(path.read_bytes()), session=session)


def onnx_int8(fp32_path: Path, path: Path, threads: int) -> Variant:
    """ONNX Runtime's own dynamic quantiser (int8 weights) over the fp32 file."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet():
        quantize_dynamic(str(fp32_path), str(path), weight_type=QuantType.QInt8)
    return onnx_session(path, threads, "onnx_int8")
