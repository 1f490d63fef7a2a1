"""Run by ``bench.peers`` in infinity-emb's own environment (torch + transformers, not this
project): write open_clip's ViT-B/32 weights in the Hugging Face CLIP layout, and check that
transformers' CLIPModel gives the same embeddings as open_clip on the same inputs.

    python bench/peers_hf.py DIR   # DIR: open_clip.pt, reference.npz, vocab.json, merges.txt

Writes DIR/hf (config, weights, tokenizer, image processor) and prints the parity as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPProcessor,
    CLIPTokenizer,
)

LAYERS = 12


def _block(src: dict[str, torch.Tensor], prefix: str, dst: str) -> dict[str, torch.Tensor]:
    """One open_clip residual block as a Hugging Face encoder layer."""
    q, k, v = src[f"{prefix}.attn.in_proj_weight"].chunk(3)
    qb, kb, vb = src[f"{prefix}.attn.in_proj_bias"].chunk(3)
    return {
        f"{dst}.self_attn.q_proj.weight": q, f"{dst}.self_attn.q_proj.bias": qb,
        f"{dst}.self_attn.k_proj.weight": k, f"{dst}.self_attn.k_proj.bias": kb,
        f"{dst}.self_attn.v_proj.weight": v, f"{dst}.self_attn.v_proj.bias": vb,
        f"{dst}.self_attn.out_proj.weight": src[f"{prefix}.attn.out_proj.weight"],
        f"{dst}.self_attn.out_proj.bias": src[f"{prefix}.attn.out_proj.bias"],
        f"{dst}.layer_norm1.weight": src[f"{prefix}.ln_1.weight"],
        f"{dst}.layer_norm1.bias": src[f"{prefix}.ln_1.bias"],
        f"{dst}.layer_norm2.weight": src[f"{prefix}.ln_2.weight"],
        f"{dst}.layer_norm2.bias": src[f"{prefix}.ln_2.bias"],
        f"{dst}.mlp.fc1.weight": src[f"{prefix}.mlp.c_fc.weight"],
        f"{dst}.mlp.fc1.bias": src[f"{prefix}.mlp.c_fc.bias"],
        f"{dst}.mlp.fc2.weight": src[f"{prefix}.mlp.c_proj.weight"],
        f"{dst}.mlp.fc2.bias": src[f"{prefix}.mlp.c_proj.bias"],
    }  # fmt: skip


def hf_state_dict(src: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's CLIP state dict under transformers' CLIPModel names."""
    out = {
        "logit_scale": src["logit_scale"],
        "text_projection.weight": src["text_projection"].T,
        "visual_projection.weight": src["visual.proj"].T,
        "text_model.embeddings.token_embedding.weight": src["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": src["positional_embedding"],
        "text_model.final_layer_norm.weight": src["ln_final.weight"],
        "text_model.final_layer_norm.bias": src["ln_final.bias"],
        "vision_model.embeddings.class_embedding": src["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": src["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": src["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": src["visual.ln_pre.weight"],
        "vision_model.pre_layrnorm.bias": src["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": src["visual.ln_post.weight"],
        "vision_model.post_layernorm.bias": src["visual.ln_post.bias"],
    }
    for i in range(LAYERS):
        out |= _block(src, f"transformer.resblocks.{i}", f"text_model.encoder.layers.{i}")
        out |= _block(src, f"visual.transformer.resblocks.{i}", f"vision_model.encoder.layers.{i}")
    return {name: tensor.contiguous() for name, tensor in out.items()}


def _min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def main(directory: Path) -> None:
    """Convert, save and check."""
    config = CLIPConfig(
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                     "num_hidden_layers": LAYERS, "max_position_embeddings": 77,
                     "vocab_size": 49408, "hidden_act": "gelu", "bos_token_id": 49406,
                     "eos_token_id": 49407, "pad_token_id": 0},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                       "num_hidden_layers": LAYERS, "image_size": 224, "patch_size": 32,
                       "hidden_act": "gelu"},
        projection_dim=512,
    )  # fmt: skip
    config.architectures = ["CLIPModel"]
    model = CLIPModel(config).eval()
    src = torch.load(directory / "open_clip.pt", map_location="cpu")
    missing, unexpected = model.load_state_dict(hf_state_dict(src), strict=False)
    missing = [m for m in missing if not m.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"weights do not map: missing {missing}, unexpected {unexpected}")
    hf = directory / "hf"
    model.save_pretrained(hf)
    tokenizer = CLIPTokenizer(
        str(directory / "vocab.json"), str(directory / "merges.txt"), model_max_length=77
    )
    CLIPProcessor(image_processor=CLIPImageProcessor(), tokenizer=tokenizer).save_pretrained(hf)

    reference = np.load(directory / "reference.npz")
    with torch.no_grad():
        images = model.get_image_features(pixel_values=torch.from_numpy(reference["pixels"]))
        texts = model.get_text_features(input_ids=torch.from_numpy(reference["tokens"]))
    ids = tokenizer([str(t) for t in reference["titles"]])["input_ids"]  # up to end-of-text
    print(json.dumps({
        "image_min_cosine": _min_cosine(images.numpy(), reference["image_features"]),
        "text_min_cosine": _min_cosine(texts.numpy(), reference["text_features"]),
        "tokenizer_matches": all(
            list(row[: len(i)]) == i for row, i in zip(reference["tokens"], ids, strict=True)
        ),
    }))  # fmt: skip


if __name__ == "__main__":
    main(Path(sys.argv[1]))
