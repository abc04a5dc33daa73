"""Small bundled models and deterministic builders of the architectures used by tests and benchmarks.

``models.builders`` makes ONNX models (ResNet, MobileNet, Inception-like, MLP, transformer, VGG,
YOLOv8) from numpy and onnx.helper alone; ``digits_cnn.onnx`` is a small trained CNN (see README.md).
"""

from pathlib import Path

MODELS_DIR = Path(__file__).resolve().parent
DIGITS_MODEL = MODELS_DIR / "digits_cnn.onnx"
DIGITS_HELDOUT = MODELS_DIR / "digits_heldout.npz"
DIGITS_LABELS = MODELS_DIR / "digits_labels.npy"
DIGITS_CALIB = MODELS_DIR / "digits_calib.npz"  # 256 training-split images (digits_calib.py), disjoint from held-out
