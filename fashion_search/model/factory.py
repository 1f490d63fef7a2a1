"""One factory for the CLIP models fashion-search uses (open_clip underneath).

A :class:`ModelSpec` names an open_clip architecture (``ViT-B-32``, or one of this package's
``configs/*.json`` such as ``fashion-compact``) and where its weights come from: a pretrained
tag (``openai``, ``laion2b_s34b_b79k``; needs the hub), a local checkpoint path, or nothing
(random init, for offline training and tests).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

#: Normalisation of the OpenAI CLIP image towers (open_clip's default for every config).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to build: architecture and weights (tag, checkpoint path, or None = random)."""

    architecture: str = "fashion-compact"
    pretrained: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored next to registered checkpoints)."""
        return asdict(self)


@dataclass
class Clip:
    """A CLIP model with what preprocessing and tokenising need to know about it."""

    model: open_clip.CLIP
    spec: ModelSpec
    tokenizer: Any
    image_size: int
    context_length: int
    embed_dim: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``[len(texts), context_length]`` (int64, zero-padded)."""
        tokens: torch.Tensor = self.tokenizer(texts)
        return tokens


def tokenizer_for(architecture: str) -> Any:
    """open_clip's tokeniser of ``architecture`` (no weights needed)."""
    return open_clip.get_tokenizer(architecture)


def create_clip(spec: ModelSpec, device: str | torch.device = "cpu") -> Clip:
    """Build the model of ``spec`` (weights loaded), in eval mode on ``device``."""
    if spec.architecture not in open_clip.list_models():
        raise ValueError(f"unknown architecture {spec.architecture!r}")
    pretrained = spec.pretrained
    if pretrained is not None and Path(pretrained).expanduser().exists():
        pretrained = str(Path(pretrained).expanduser())
    model = open_clip.create_model(spec.architecture, pretrained=pretrained, device=device)
    model.eval()
    image_size = model.visual.image_size
    size = image_size[0] if isinstance(image_size, tuple | list) else int(image_size)
    mean = getattr(model.visual, "image_mean", None) or CLIP_MEAN
    std = getattr(model.visual, "image_std", None) or CLIP_STD
    return Clip(
        model=model,
        spec=spec,
        tokenizer=tokenizer_for(spec.architecture),
        image_size=size,
        context_length=int(model.context_length),
        embed_dim=int(model.text_projection.shape[1])
        if isinstance(model.text_projection, torch.Tensor)
        else int(model.text_projection.out_features),
        mean=tuple(mean),
        std=tuple(std),
    )
