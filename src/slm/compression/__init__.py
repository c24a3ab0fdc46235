"""Compression: ONNX export, int8 quantization, pruning with distillation, the static turbo tier."""
