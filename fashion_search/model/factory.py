"""One factory for the CLIP models fashion-search uses (open_clip underneath).

A :class:`ModelSpec` names an open_clip architecture (``ViT-B-32``, or one of this package's
``configs/*.json`` such as ``fashion-compact``) and where its weights come from: a pretrained
tag (``openai``, ``laion2b_s34b_b79k``; needs the hub), a local checkpoint path, or nothing:
random init, except that towers a config takes from timm or Hugging Face (``effnet-lite2-minilm``)
start from their pretrained weights, from a package when one ships them
(:mod:`fashion_search.model.pretrained_towers`), else from the hub.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch

from fashion_search.model import DEFAULT_ARCHITECTURE

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)

#: Normalisation of the OpenAI CLIP image towers (open_clip's default for every config).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ModelSpec:
    """Which CLIP to build: architecture and weights (tag, checkpoint path, or None = random)."""

    architecture: str = DEFAULT_ARCHITECTURE
    pretrained: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored next to registered checkpoints)."""
        return asdict(self)


@dataclass
class Clip:
    """A CLIP model with what preprocessing and tokenising need to know about it; for a
    Hugging Face text tower, the folder of its config and tokenizer."""

    model: open_clip.CLIP
    spec: ModelSpec
    tokenizer: Any
    image_size: int
    context_length: int
    embed_dim: int
    mean: tuple[float, ...] = CLIP_MEAN
    std: tuple[float, ...] = CLIP_STD
    text_tower: str | None = None

    @property
    def hf_text(self) -> bool:
        """Whether the text tower is a Hugging Face model (WordPiece tokens, mean pooling)."""
        return self.text_tower is not None

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """Token ids ``[len(texts), context_length]`` (int64, zero-padded)."""
        tokens: torch.Tensor = self.tokenizer(texts)
        return tokens


def tokenizer_for(architecture: str) -> Any:
    """open_clip's tokeniser of ``architecture`` (no weights needed)."""
    return open_clip.get_tokenizer(architecture)


def create_clip(
    spec: ModelSpec,
    device: str | torch.device = "cpu",
    text_tower: str | None = None,
    tower_weights: bool = True,
) -> Clip:
    """Build the model of ``spec`` (weights loaded), in eval mode on ``device``.

    For a config with pretrained towers: ``text_tower`` is the folder of the Hugging Face
    text tower's config and tokenizer (default: the config's name, resolved by
    :func:`~fashion_search.model.pretrained_towers.text_tower_path`); ``tower_weights`` False
    builds the towers without their pretrained weights (a checkpoint replaces them all).
    """
    if spec.architecture not in open_clip.list_models():
        raise ValueError(f"unknown architecture {spec.architecture!r}")
    pretrained = spec.pretrained
    if pretrained is not None and Path(pretrained).expanduser().exists():
        pretrained = str(Path(pretrained).expanduser())
    config = open_clip.get_model_config(spec.architecture)
    timm_name = config["vision_cfg"].get("timm_model_name")
    towers = tower_weights and pretrained is None
    overrides: dict[str, Any] = {}
    if "hf_model_name" in config["text_cfg"]:
        from fashion_search.model.pretrained_towers import text_tower_path
        from fashion_search.settings import get_settings

        text_tower = text_tower or text_tower_path(
            config["text_cfg"]["hf_model_name"], get_settings().cache_dir
        )
        overrides["text_cfg"] = {
            **config["text_cfg"], "hf_model_name": text_tower, "hf_tokenizer_name": text_tower,
            "hf_model_pretrained": towers,
        }  # fmt: skip
    package_weights = None
    if timm_name and towers:
        from fashion_search.model.pretrained_towers import image_tower_weights

        package_weights = image_tower_weights(timm_name)
    model = open_clip.create_model(
        spec.architecture, pretrained=pretrained, device=device,
        pretrained_image=bool(timm_name) and towers and package_weights is None, **overrides,
    )  # fmt: skip
    if package_weights is not None:
        from fashion_search.model.pretrained_towers import load_image_tower

        load_image_tower(model.visual.trunk, package_weights)
    model.eval()
    image_size = model.visual.image_size
    size = image_size[0] if isinstance(image_size, tuple | list) else int(image_size)
    mean = getattr(model.visual, "image_mean", None) or CLIP_MEAN
    std = getattr(model.visual, "image_std", None) or CLIP_STD
    if timm_name:  # the normalisation the trunk was trained with
        mean, std = (
            model.visual.trunk.pretrained_cfg["mean"],
            model.visual.trunk.pretrained_cfg["std"],
        )
    context_length = int(config["text_cfg"].get("context_length", model.context_length))
    if text_tower is not None:
        tokenizer = open_clip.tokenizer.HFTokenizer(text_tower, context_length=context_length)
    else:
        tokenizer = tokenizer_for(spec.architecture)
    return Clip(
        model=model,
        spec=spec,
        tokenizer=tokenizer,
        image_size=size,
        context_length=context_length,
        embed_dim=int(config["embed_dim"]),
        mean=tuple(mean),
        std=tuple(std),
        text_tower=text_tower,
    )
