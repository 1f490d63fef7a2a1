"""Export the CLIP towers to ONNX (dynamic batch; the text tower also dynamic sequence length,
see :mod:`fashion_search.model.towers`), and their int8 variant."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import torch

from fashion_search.model.factory import Clip
from fashion_search.model.towers import ImageTower, TextTower

IMAGE_INPUT = "pixel_values"
TEXT_INPUT = "input_ids"
OUTPUT = "embeddings"
OPSET = 18


def export_image_tower(clip: Clip, path: Path) -> Path:
    """Write the image tower as ONNX with a dynamic batch axis."""
    example = torch.zeros(2, 3, clip.image_size, clip.image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return _export(ImageTower(clip), example, IMAGE_INPUT, {0: batch}, path)


def export_text_tower(clip: Clip, path: Path) -> Path:
    """Write the text tower as ONNX with dynamic batch and sequence axes."""
    example = clip.tokenize(["a navy blue shirt", "red dress"])[:, :8].contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("sequence", min=2, max=clip.context_length)
    return _export(TextTower(clip), example, TEXT_INPUT, {0: batch, 1: length}, path)


def _export(
    module: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    axes: dict[int, Any],
    path: Path,
) -> Path:
    program = torch.onnx.export(
        module.eval(),
        (example,),
        dynamo=True,
        input_names=[input_name],
        output_names=[OUTPUT],
        dynamic_shapes={input_name: axes},
        opset_version=OPSET,
        optimize=True,
        verbose=False,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    program.save(str(path), external_data=False)
    onnx.checker.check_model(str(path))
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation (weights int8, activations quantised at run time) for CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    return target
