"""Export the CLIP towers to ONNX (dynamic batch; the text tower also dynamic sequence length,
see :mod:`fashion_search.model.towers`), their int8 (CPU) and fp16 (GPU) variants.
:mod:`model_server.export` exports a registered version with these functions (its revision:
``EXPORT_REVISION`` there).

Before export, a copy of the model gets two export-friendly modules with the same weights and
the same numbers: :class:`ExportAttention` for every ``nn.MultiheadAttention`` (exported as ONNX
Runtime's fused ``com.microsoft.MultiHeadAttention``: no transposes, half the time of the
decomposed attention on CPU) and :class:`PatchEmbedding` for the ViT's patch convolution (a
MatMul, so the int8 variant quantizes it; ONNX Runtime's ``ConvInteger`` was slower than the
fp32 convolution). After export, ONNX Runtime's transformer optimizer fuses the
graph (bias + GELU), and the int8 variant quantizes every MatMul with a constant weight.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import onnx
import torch
import torch.nn.functional as F
from torch import nn

from fashion_search.model.factory import Clip
from fashion_search.model.towers import ImageTower, TextTower

IMAGE_INPUT = "pixel_values"
TEXT_INPUT = "input_ids"
OUTPUT = "embeddings"
OPSET = 18


class ExportAttention(nn.Module):
    """Batch-first self-attention with the weights of an ``nn.MultiheadAttention``; exported as
    one ``com.microsoft.MultiHeadAttention`` node. The only mask it takes is the causal one
    (``unidirectional``), which :func:`export_ready` checks."""

    def __init__(self, attention: nn.MultiheadAttention) -> None:
        super().__init__()
        if not attention.batch_first or attention.in_proj_weight is None:
            raise ValueError("only batch-first self-attention with a packed projection")
        self.heads = attention.num_heads
        self.in_proj_weight = attention.in_proj_weight
        self.in_proj_bias = attention.in_proj_bias
        self.out_proj = attention.out_proj

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        need_weights: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, None]:
        """Self-attention over ``query`` (``key`` and ``value`` are the same tensor)."""
        batch, length, width = query.shape
        causal = attn_mask is not None
        q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if torch.onnx.is_in_onnx_export():
            out = torch.onnx.ops.symbolic(
                "com.microsoft::MultiHeadAttention",
                (q, k, v),
                {"num_heads": self.heads, "unidirectional": int(causal)},
                dtype=q.dtype,
                shape=q.shape,
                version=1,
            )
        else:
            heads = (t.view(batch, length, self.heads, -1).transpose(1, 2) for t in (q, k, v))
            out = F.scaled_dot_product_attention(*heads, is_causal=causal)
            out = out.transpose(1, 2).reshape(batch, length, width)
        return self.out_proj(out), None


class PatchEmbedding(nn.Module):
    """A ViT's patch convolution (kernel = stride, no padding) as patchify + linear."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if conv.kernel_size != conv.stride or conv.padding != (0, 0) or conv.groups != 1:
            raise ValueError("only a non-overlapping patch convolution")
        self.patch = int(conv.kernel_size[0])
        self.weight = nn.Parameter(conv.weight.detach().flatten(1), requires_grad=False)
        self.bias = conv.bias

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``[B, C, H, W]`` -> ``[B, width, H / patch, W / patch]``, as the convolution."""
        b, c, h, w = pixels.shape
        p, rows, cols = self.patch, h // self.patch, w // self.patch
        patches = pixels.reshape(b, c, rows, p, cols, p).permute(0, 2, 4, 1, 3, 5)
        out = F.linear(patches.reshape(b, rows * cols, c * p * p), self.weight, self.bias)
        return out.transpose(1, 2).reshape(b, -1, rows, cols)


def export_ready(clip: Clip) -> Clip:
    """A copy of ``clip`` with :class:`ExportAttention` and :class:`PatchEmbedding` swapped in."""
    model = copy.deepcopy(clip.model).eval()
    mask = getattr(model, "attn_mask", None)
    if mask is not None and not torch.equal(mask, _causal_mask(mask.shape[0])):
        raise ValueError("the text tower's attention mask is not the causal mask")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.MultiheadAttention):
                setattr(module, name, ExportAttention(child))
            elif isinstance(child, nn.Conv2d) and name == "conv1":
                setattr(module, name, PatchEmbedding(child))
    return dataclasses.replace(clip, model=model)


def _causal_mask(length: int) -> torch.Tensor:
    return torch.full((length, length), float("-inf")).triu(1)


def export_image_tower(clip: Clip, path: Path) -> Path:
    """Write the image tower as ONNX with a dynamic batch axis."""
    example = torch.zeros(2, 3, clip.image_size, clip.image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    return export_module(ImageTower(export_ready(clip)), example, IMAGE_INPUT, {0: batch}, path)


def export_text_tower(clip: Clip, path: Path) -> Path:
    """Write the text tower as ONNX with dynamic batch and sequence axes."""
    example = clip.tokenize(["a navy blue shirt", "red dress"])[:, :8].contiguous()
    batch = torch.export.Dim("batch", min=1, max=4096)
    length = torch.export.Dim("sequence", min=2, max=clip.context_length)
    module = TextTower(export_ready(clip))
    kind = "bert" if clip.hf_text else "vit"
    return export_module(module, example, TEXT_INPUT, {0: batch, 1: length}, path, kind)


def export_module(
    module: torch.nn.Module,
    example: torch.Tensor,
    input_name: str,
    axes: dict[int, Any],
    path: Path,
    model_type: str = "vit",
) -> Path:
    """Write ``module`` (one input, named ``input_name``, with ``axes`` dynamic) as ONNX at
    ``path``, with ONNX Runtime's offline fusions for ``model_type``."""
    from onnxruntime.transformers.optimizer import optimize_model

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
    # Offline fusions (opt_level 0: the graph stays runnable on any execution provider).
    optimize_model(
        str(path), model_type=model_type, num_heads=0, hidden_size=0, opt_level=0
    ).save_model_to_file(str(path))
    onnx.checker.check_model(str(path))
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic int8 quantisation of the MatMuls (weights int8, activations quantised at run
    time) for CPU."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    target.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(
        str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"]
    )
    return target


def convert_fp16(source: Path, target: Path) -> Path:
    """The fp16 variant for GPUs: weights and activations in half precision, inputs and output
    kept float32 (the server feeds and reads the same arrays as the fp32 variant). Softmax,
    LayerNormalization and the final normalization stay fp32: ONNX Runtime's fp16 conversion
    keeps the ops that lose range in half precision out of it."""
    from onnxruntime.transformers.onnx_model import OnnxModel

    model = OnnxModel(onnx.load(str(source)))
    model.convert_float_to_float16(
        keep_io_types=True,
        op_block_list=["Softmax", "LayerNormalization", "ReduceL2", "ReduceSumSquare", "Div"],
    )
    model.topological_sort()
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save_model_to_file(str(target))
    onnx.checker.check_model(str(target))
    return target
