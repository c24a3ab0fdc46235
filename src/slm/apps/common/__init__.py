"""Code several apps share (the vector index, the ONNX encoders, PyTorch embedding helpers); no app's own.

The apps never import one another: what two of them use lives here.
"""
