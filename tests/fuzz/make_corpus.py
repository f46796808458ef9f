#!/usr/bin/env python3
"""Writes the deterministic seed corpus of the fuzz targets: tests/fuzz/corpus/<family>/seed-*.

Each seed starts with the bytes that pick the scalar type and the method (see each target's
LLVMFuzzerTestOneInput / run), followed by a pseudo-random tail from a fixed seed, so every
method of every family is reached in float and double from the first run. Regression inputs
(minimized crashers, corpus/<family>/regress-*) are committed by hand and left alone here.
Run from anywhere: python3 tests/fuzz/make_corpus.py
"""
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
# family -> (methods, whether byte 0 picks the scalar type before the method byte)
FAMILIES = {
    "sigmoid": (5, True),
    "softmax": (2, True),
    "state": (2, True),
    "ranking": (3, True),
    "dr": (1, True),
    "boxes": (1, True),
    "samplers": (6, False),
    "pisa": (3, True),
    "unbiased": (4, True),
}
TAILS = (12, 40, 120)


def main():
    rng = random.Random(20261202)
    for family, (methods, scalar_first) in FAMILIES.items():
        out = os.path.join(HERE, "corpus", family)
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(out):
            if name.startswith("seed-"):
                os.remove(os.path.join(out, name))
        per = max(2, 36 // (methods * (2 if scalar_first else 1) * len(TAILS)))
        count = 0
        for scalar in ((0, 1) if scalar_first else (None,)):
            for method in range(methods):
                for tail in TAILS:
                    for _ in range(per):
                        head = ([scalar] if scalar is not None else []) + ([method] if methods > 1 else [])
                        body = bytes(head + [rng.randrange(256) for _ in range(tail)])
                        with open(os.path.join(out, "seed-%03d" % count), "wb") as f:
                            f.write(body)
                        count += 1
        print("%s: %d seeds" % (family, count))


if __name__ == "__main__":
    main()
