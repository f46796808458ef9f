"""A synthetic detection benchmark, generated deterministically from a seed.

Each image is SIZE x SIZE RGB on a textured background (smooth value noise, a random grating and
pixel noise, in a random colour pair); on it lie 1..MAX_OBJECTS objects of NUM_CLASSES classes:

    class 1 square, class 2 disk, class 3 triangle, class 4 ring (an annulus)

at scales from MIN_SIDE to MAX_SIDE pixels and aspect ratios 1:2..2:1, each filled with a colour
of its own (different from the background's, but not chosen per class: the class is the shape).
Boxes are the tight bounds of the drawn pixels, (x1, y1, x2, y2) in pixel-edge coordinates
(a pixel column i spans [i, i + 1)). An object is redrawn elsewhere when it would cover more than
half of an earlier one, so every box is visible.

The same (seed, index) always gives the same image (numpy's PCG64 seeded by (seed, split, index)),
on every platform: the splits are independent streams, so the validation set does not change when
the training set grows.
"""
import numpy as np

SIZE = 128
NUM_CLASSES = 4
CLASS_NAMES = ("square", "disk", "triangle", "ring")
MIN_SIDE, MAX_SIDE = 8, 40
MAX_OBJECTS = 2
_SPLITS = {"train": 0, "val": 1}


def _value_noise(rng, size, cells):
    """Bilinearly upsampled uniform noise on a cells x cells grid: smooth blobs in [0, 1]."""
    g = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    a = g[i][:, i] * (1 - f)[None, :] + g[i][:, i + 1] * f[None, :]
    b = g[i + 1][:, i] * (1 - f)[None, :] + g[i + 1][:, i + 1] * f[None, :]
    return a * (1 - f)[:, None] + b * f[:, None]


def _background(rng, size):
    c0, c1 = rng.random(3), rng.random(3)
    n = 0.6 * _value_noise(rng, size, int(rng.integers(3, 9)))
    theta, freq = rng.random() * np.pi, rng.uniform(0.15, 0.6)
    yy, xx = np.mgrid[0:size, 0:size]
    n = n + 0.4 * (0.5 + 0.5 * np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta))))
    img = c0[None, None, :] * (1 - n[..., None]) + c1[None, None, :] * n[..., None]
    return img, (c0 + c1) / 2


def _mask(cls, w, h, rng):
    """The shape's h x w boolean mask (class 1..4)."""
    yy, xx = np.mgrid[0:h, 0:w]
    u = (xx + 0.5) / w * 2 - 1
    v = (yy + 0.5) / h * 2 - 1
    if cls == 1:
        return np.ones((h, w), bool)
    r = u * u + v * v
    if cls == 2:
        return r <= 1.0
    if cls == 3:  # apex at the top centre, base at the bottom: |u| <= (v + 1) / 2
        return np.abs(u) <= (v + 1) / 2
    return (r <= 1.0) & (r >= 0.3)


def _colour_away_from(rng, mean):
    for _ in range(20):
        c = rng.random(3)
        if np.abs(c - mean).sum() > 0.6:
            return c
    return 1.0 - mean


def make_image(seed, split, index):
    """Returns (image float32 3 x SIZE x SIZE in [0, 1], boxes float32 K x 4, labels int64 K)."""
    rng = np.random.default_rng([int(seed), _SPLITS[split], int(index)])
    img, mean = _background(rng, SIZE)
    k = int(rng.integers(1, MAX_OBJECTS + 1))
    boxes, labels, occupied = [], [], np.zeros((SIZE, SIZE), np.int32)
    for _ in range(k):
        for _attempt in range(30):
            cls = int(rng.integers(1, NUM_CLASSES + 1))
            side = np.exp(rng.uniform(np.log(MIN_SIDE), np.log(MAX_SIDE)))
            ratio = np.exp(rng.uniform(np.log(0.5), np.log(2.0)))
            w = int(np.clip(round(side * np.sqrt(ratio)), 6, SIZE - 2))
            h = int(np.clip(round(side / np.sqrt(ratio)), 6, SIZE - 2))
            x0 = int(rng.integers(0, SIZE - w + 1))
            y0 = int(rng.integers(0, SIZE - h + 1))
            m = _mask(cls, w, h, rng)
            region = occupied[y0:y0 + h, x0:x0 + w]
            # no earlier object may lose more than half of its pixels
            ok = True
            for j in range(len(boxes)):
                total = (occupied == j + 1).sum()
                if ((region == j + 1) & m).sum() * 2 > total:
                    ok = False
            if ok:
                break
        else:
            continue
        colour = _colour_away_from(rng, mean)
        sub = img[y0:y0 + h, x0:x0 + w]
        sub[m] = colour
        region[m] = len(boxes) + 1
        boxes.append(None)
        labels.append(cls)
    # boxes from the visible pixels of each object
    out_boxes = []
    for j in range(len(labels)):
        ys, xs = np.nonzero(occupied == j + 1)
        out_boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    img = img + rng.normal(0, 0.03, img.shape)
    img = np.clip(img, 0, 1).astype(np.float32).transpose(2, 0, 1).copy()
    return (img, np.asarray(out_boxes, np.float32).reshape(-1, 4),
            np.asarray(labels, np.int64))


def make_split(seed, split, count):
    """count images: (images float32 count x 3 x SIZE x SIZE, list of boxes, list of labels)."""
    imgs, bxs, lbs = [], [], []
    for i in range(count):
        im, b, l = make_image(seed, split, i)
        imgs.append(im)
        bxs.append(b)
        lbs.append(l)
    return np.stack(imgs), bxs, lbs


# ----------------------------------------------------------------------------------------------
# Anchors: an FPN-ish grid, RetinaNet's layout (3 octave scales x 3 aspect ratios per location).

STRIDES = (4, 8, 16)
BASE_SCALE = 2.0          # anchor side = BASE_SCALE * stride * 2^(k/3), as RetinaNet's 4 * stride
SCALES = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
RATIOS = (0.5, 1.0, 2.0)
A = len(SCALES) * len(RATIOS)


def anchors(size=SIZE):
    """All anchors, float32 N x 4, in the order the head emits them: level, then y, x, then
    anchor (ratio-major, scale-minor)."""
    out = []
    for s in STRIDES:
        n = size // s
        cy, cx = np.meshgrid((np.arange(n) + 0.5) * s, (np.arange(n) + 0.5) * s, indexing="ij")
        base = []
        for r in RATIOS:
            for k in SCALES:
                side = BASE_SCALE * s * k
                w, h = side / np.sqrt(r), side * np.sqrt(r)
                base.append((-w / 2, -h / 2, w / 2, h / 2))
        base = np.asarray(base)
        c = np.stack([cx, cy, cx, cy], -1).reshape(-1, 1, 4)
        out.append((c + base[None]).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)
