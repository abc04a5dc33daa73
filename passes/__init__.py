"""onnxcomp pass library (installed as onnxcomp.passes)."""
