"""Persistent gRPC model server: the MLflow champion CLIP, exported to ONNX, served with ONNX
Runtime (CUDA when really available, else CPU), with server-side micro-batching."""
