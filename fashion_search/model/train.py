"""Contrastive fine-tuning / training of a CLIP on product images and captions.

Symmetric InfoNCE (open_clip's ClipLoss), AdamW, linear warm-up then cosine decay, gradient
clipping, optional horizontal flips, bf16 autocast; deterministic for a given seed. Extra
(query, product) pairs from shoppers' feedback are trained beside the products' own captions,
each pair with a hard negative (a product judged not relevant for the query) adding a
pairwise logistic term that ranks the relevant image above it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from open_clip import ClipLoss
from torch.nn.attention import SDPBackend, sdpa_kernel
from tqdm import tqdm

from fashion_search.learning.judgements import TrainingPairs
from fashion_search.model.data import ProductImages, attribute_caption
from fashion_search.model.embed import normalize_pixels
from fashion_search.model.factory import Clip
from fashion_search.model.towers import TextTower, cut_tokens_torch


@dataclass(frozen=True)
class TrainConfig:
    """Training hyper-parameters. Defaults are the original study's fine-tuning recipe;
    training from scratch needs its own (see ``SCRATCH_RECIPE``)."""

    epochs: int = 5
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 0.1
    warmup_steps: int = 100
    grad_clip: float = 1.0
    flip: bool = True
    title_share: float = 0.5  # captions: the title, else "{gender} {baseColour} {articleType}"
    seed: int = 0
    # bf16 autocast where the device computes bf16 fast (CUDA; a CPU with AVX-512 BF16 or AMX:
    # 1.8x fp32 there), else fp32 (on an AVX2-only CPU a bf16 matmul took 72x the fp32 one).
    precision: Literal["auto", "bf16", "fp32"] = "auto"

    def to_dict(self) -> dict[str, Any]:
        """Flat parameters for MLflow."""
        return asdict(self)


#: From-scratch recipe of the compact default model (see shared/notes/model-baselines.md).
SCRATCH_RECIPE = {
    "epochs": 8,
    "batch_size": 256,
    "lr": 5e-4,
    "warmup_steps": 100,
    "title_share": 0.6,
}
#: Locked pretrained towers, heads trained on their features (decision 0039).
LOCKED_RECIPE = {
    "epochs": 30,
    "batch_size": 1024,
    "lr": 2e-3,
    "weight_decay": 0.05,
    "warmup_steps": 50,
    "title_share": 0.5,
}


def recipe_for(architecture: str, pretrained: str | None) -> dict[str, Any]:
    """The default recipe: fine-tuning's (a pretrained CLIP), locked towers' (a config with
    pretrained towers), or training from scratch."""
    import open_clip

    if pretrained is not None:
        return {}
    config = open_clip.get_model_config(architecture) or {}
    if "hf_model_name" in config.get("text_cfg", {}):
        return dict(LOCKED_RECIPE)
    return dict(SCRATCH_RECIPE)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def attention_kernel(device: torch.device) -> AbstractContextManager[object]:
    """The attention kernel for training on ``device``: on CPU the math one. For CLIP's short
    sequences (image 17, text <= 32 tokens here) the flash kernel's backward took 27% of a
    step on 2 cores; the math kernel made a step ~25% faster (see README, Model)."""
    return sdpa_kernel(SDPBackend.MATH) if device.type == "cpu" else nullcontext()


def autocast_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """bf16 when asked, or when automatic and the device computes it fast; else None (fp32)."""
    if config.precision == "fp32":
        return None
    fast = device.type == "cuda" or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return torch.bfloat16 if config.precision == "bf16" or fast else None


def lr_at(step: int, total: int, config: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine decay to zero."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def hard_negative_loss(
    text: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Mean ``-log softmax([t·p, t·n])[0]``: each text's relevant image above its negative."""
    margin = scale * ((text * negative).sum(-1) - (text * positive).sum(-1))
    return torch.nn.functional.softplus(margin).mean()


def _step(
    optimizer: torch.optim.Optimizer,
    loss: torch.Tensor,
    params: list[torch.nn.Parameter],
    model: torch.nn.Module,
    grad_clip: float,
) -> float:
    """One optimiser step on ``loss`` (gradients of ``params`` clipped), the logit scale kept
    within CLIP's bound; returns the loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return float(loss.item())


def train_heads(
    clip: Clip,
    data: ProductImages,
    image_features: np.ndarray[Any, Any],
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: bool = True,
    pairs: TrainingPairs | None = None,
) -> list[float]:
    """Train the projection heads of ``clip``'s locked towers (and the logit scale) in place,
    on the trunk's ``image_features`` of ``data`` (:mod:`fashion_search.model.features`), its
    captions and the feedback ``pairs``; returns each epoch's mean loss."""
    from fashion_search.model.features import text_features

    if config.epochs == 0:
        return []
    if len(data) < 2:
        raise ValueError("training needs at least two products")
    seed_everything(config.seed)
    model = clip.model
    extra = pairs or TrainingPairs([], [], [], 0)
    n = len(data)
    titles = [f.product_display_name for f in data.fields]
    captions = text_features(clip, [*titles, *(attribute_caption(f) for f in data.fields),
                                    *extra.queries])  # fmt: skip
    image_rows = torch.from_numpy(np.concatenate([np.arange(n), np.asarray(extra.positives, int)]))
    negatives = torch.as_tensor(extra.negatives, dtype=torch.long)
    images = torch.from_numpy(image_features)
    texts = torch.from_numpy(captions)
    heads = [model.visual.head, model.text.proj]
    params = [p for head in heads for p in head.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in [*params, model.logit_scale]:
        p.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        [{"params": params, "weight_decay": config.weight_decay},
         {"params": [model.logit_scale], "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-6,
    )  # fmt: skip
    loss_fn = ClipLoss()
    rows = len(image_rows)
    batch_size = min(config.batch_size, rows)
    steps_per_epoch = rows // batch_size
    total = steps_per_epoch * config.epochs
    for head in heads:
        head.train()
    losses, step = [], 0
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(config.epochs):
        order = torch.randperm(rows, generator=generator)
        running = 0.0
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}",
                   disable=not progress)  # fmt: skip
        for batch_index in bar:
            idx = order[batch_index * batch_size : (batch_index + 1) * batch_size]
            is_pair = idx >= n
            attribute = torch.rand(len(idx), generator=generator) >= config.title_share
            caption = torch.where(is_pair, 2 * n + idx - n, idx + n * attribute.long())
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, config)
            image_embeddings = F.normalize(model.visual.head(images[image_rows[idx]]), dim=-1)
            text_embeddings = F.normalize(model.text.proj(texts[caption]), dim=-1)
            scale = model.logit_scale.exp()
            loss = loss_fn(image_embeddings, text_embeddings, scale)
            hard = is_pair.nonzero().flatten()
            if len(hard):
                negative = negatives[idx[hard] - n]
                kept = hard[negative >= 0]
                if len(kept):
                    negative_embeddings = F.normalize(
                        model.visual.head(images[negatives[idx[kept] - n]]), dim=-1
                    )
                    loss = loss + hard_negative_loss(
                        text_embeddings[kept], image_embeddings[kept], negative_embeddings, scale
                    )
            running += _step(optimizer, loss, params, model, config.grad_clip)
            step += 1
            bar.set_postfix(loss=f"{running / (batch_index + 1):.3f}")
        losses.append(running / max(steps_per_epoch, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    for p in model.parameters():
        p.requires_grad_(True)
    model.eval()
    return losses


def train(
    clip: Clip,
    data: ProductImages,
    config: TrainConfig,
    on_epoch: Callable[[int, float], None] | None = None,
    progress: bool = True,
    pairs: TrainingPairs | None = None,
) -> list[float]:
    """Train ``clip`` in place, on ``data`` and the feedback ``pairs`` (rows of ``data`` with a
    query as caption); returns the mean loss of each epoch (none for 0 epochs)."""
    if config.epochs == 0:
        return []
    if len(data) < 2:
        raise ValueError("training needs at least two products")
    seed_everything(config.seed)
    rng = random.Random(config.seed)
    model = clip.model
    device = next(model.parameters()).device
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "embedding" in n]
    optimizer = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
        fused=True,  # one kernel for all parameters: 78 -> 22 ms a step on 2 CPU cores
    )
    loss_fn = ClipLoss()
    text_tower = TextTower(clip)  # runs only up to the batch's last end-of-text token
    n_products, extra = len(data), pairs or TrainingPairs([], [], [], 0)
    rows = n_products + len(extra)  # a row past the products is a feedback pair
    batch_size = min(config.batch_size, rows)
    steps_per_epoch = rows // batch_size
    total = steps_per_epoch * config.epochs
    dtype = autocast_dtype(config, device)
    autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    images = torch.from_numpy(data.images)
    losses, step = [], 0
    for epoch in range(config.epochs):
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(config.seed + epoch))
        running = 0.0
        bar = tqdm(
            range(steps_per_epoch), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress
        )
        for batch_index in bar:
            idx = order[batch_index * batch_size : (batch_index + 1) * batch_size].tolist()
            batch = images[[i if i < n_products else extra.positives[i - n_products] for i in idx]]
            if config.flip:
                flip = torch.rand(len(idx), generator=torch.Generator().manual_seed(step)) < 0.5
                batch[flip] = batch[flip].flip(2)
            pixels = normalize_pixels(batch.to(device), clip)
            captions = [
                data.caption(i, rng, config.title_share)
                if i < n_products
                else extra.queries[i - n_products]
                for i in idx
            ]
            hard = [(row, extra.negatives[i - n_products]) for row, i in enumerate(idx)
                    if i >= n_products and extra.negatives[i - n_products] >= 0]  # fmt: skip
            tokens = cut_tokens_torch(clip.tokenize(captions)).to(device)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, config)
            with autocast, attention_kernel(device):
                image_features = model.encode_image(pixels, normalize=True)
                text_features = text_tower(tokens)
                scale = model.logit_scale.exp()
                loss = loss_fn(image_features, text_features, scale)
                if hard:
                    at = [row for row, _ in hard]
                    negative = normalize_pixels(images[[n for _, n in hard]].to(device), clip)
                    loss = loss + hard_negative_loss(
                        text_features[at], image_features[at],
                        model.encode_image(negative, normalize=True), scale,
                    )  # fmt: skip
            running += _step(optimizer, loss, list(model.parameters()), model, config.grad_clip)
            step += 1
            bar.set_postfix(loss=f"{running / (batch_index + 1):.3f}")
        losses.append(running / max(steps_per_epoch, 1))
        if on_epoch is not None:
            on_epoch(epoch, losses[-1])
    model.eval()
    return losses
