"""One module per com.onnxcomp op (as runtime/src has one .cc per op), each registering its :class:`OpSpec`."""
