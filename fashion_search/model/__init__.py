"""CLIP model code shared by training, evaluation, export, serving and benchmarks."""
