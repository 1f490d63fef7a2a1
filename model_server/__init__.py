"""Persistent gRPC model server: the MLflow champion CLIP, served from its ONNX export with ONNX
Runtime (CUDA when really available, else CPU), with server-side micro-batching. Serving needs
no torch; exporting a version (:mod:`model_server.export`) does."""
