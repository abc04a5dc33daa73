"""onnxcomp."""
