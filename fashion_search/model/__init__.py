"""CLIP model code shared by training, evaluation, export, serving and benchmarks."""

#: The offline default model (``configs/``): pretrained towers from packages, its heads trained
#: on the catalog (decision 0039).
DEFAULT_ARCHITECTURE = "effnet-lite2-minilm"
