"""Torch-free text generation over exported ONNX graphs with a KV cache."""
