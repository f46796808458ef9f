"""The study runner: every method x seed, JSON results, a progress line with the time left, the
plots and the results table of docs/study.md.

    /usr/bin/python3 -m fgbg_study.run [--quick] [--methods a,b] [--seeds 0,1,2] [--iters N]
                                      [--out DIR] [--docs docs/study.md] [--fresh]

(from study/, with the fgbg package importable: scripts/dev.sh study does both). Finished runs
are kept as OUT/runs/<method>_s<seed>.json and skipped when the command is run again with the
same settings, so an interrupted study resumes where it stopped.
"""
import argparse
import json
import os
import sys
import time

import numpy as np
import torch

from . import data, train as T, twostage as S

PROFILES = {
    # the full study: about two hours on the 2-core machine (one thread)
    "full": dict(iters=1000, train_images=3000, val_images=300, seeds=(0, 1, 2)),
    # the quick study: the same runs, shorter
    "quick": dict(iters=300, train_images=600, val_images=150, seeds=(0, 1, 2)),
}

SURVEY = {
    # the survey's Table 1 as the issue quotes it (COCO AP or relative to the baseline)
    "bce": "—",
    "focal": "35.6–36.3 (RetinaNet)",
    "ghmc": "+0.2 over focal",
    "ap_loss": "+1.1",
    "dr_loss": "+1.5",
    "residual_objectness": "+1.3",
    "sampling_free": "+0.3 (RetinaNet), +1.6 (Faster R-CNN)",
    "random_biased": "36.4–36.8 (Faster R-CNN)",
    "ohem": "+0.2",
    "iou_balanced": "+0.4",
    "isr_carl": "+1.5 (ISR)",
}

LABELS = {"bce": "BCE (baseline)", "focal": "focal", "ghmc": "GHM-C", "qfl": "QFL", "vfl": "VFL",
          "ap_loss": "AP loss", "alrp": "aLRP", "rank_sort": "Rank & Sort", "dr_loss": "DR loss",
          "tal_bce": "TAL-style soft BCE", "sampling_free": "sampling-free",
          "residual_objectness": "residual objectness", "random_biased": "random biased sampling",
          "ohem": "OHEM", "iou_balanced": "IoU-balanced sampling", "isr_carl": "ISR-P + CARL"}


def _fmt_time(s):
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def summarise(results):
    """Per method: AP mean and std over seeds (sample std, ddof 1), dAP against the detector's
    baseline (one-stage: BCE, two-stage: random biased sampling), timing means."""
    rows = {}
    for m in dict.fromkeys(r["method"] for r in results):
        rs = [r for r in results if r["method"] == m]
        ap = np.array([100 * r["AP"] for r in rs])
        rows[m] = {"n": len(rs), "AP": ap.mean(), "AP_std": ap.std(ddof=1) if len(rs) > 1 else 0.0,
                   "AP50": np.mean([100 * r["AP50"] for r in rs]),
                   "AP75": np.mean([100 * r["AP75"] for r in rs]),
                   "ms_iter": 1000 * np.mean([r["time_per_iter"] for r in rs]),
                   "ms_loss": 1000 * np.mean([r["loss_time_per_iter"] for r in rs]),
                   "loss_share": 100 * np.mean([r["loss_share"] for r in rs]),
                   "seeds": [r["seed"] for r in rs]}
    for m in rows:
        base = "random_biased" if m in S.TWO_STAGE else "bce"
        if base in rows:
            rows[m]["dAP"] = rows[m]["AP"] - rows[base]["AP"]
    return rows


def table_markdown(rows, settings):
    out = ["| method | AP (mean ± std) | ΔAP vs baseline | AP50 | AP75 | ms / iter | loss ms / iter "
           "(share) | seeds | survey's Table 1 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for m, r in rows.items():
        d = r.get("dAP")
        name = f"two-stage: {LABELS.get(m, m)}" if m in S.TWO_STAGE else LABELS.get(m, m)
        spread = f"± {r['AP_std']:.1f}" if r["n"] > 1 else "(one seed)"
        out.append(f"| {name} | {r['AP']:.1f} {spread} | "
                   f"{'—' if m in ('bce', 'random_biased') or d is None else f'{d:+.1f}'} | {r['AP50']:.1f} | "
                   f"{r['AP75']:.1f} | {r['ms_iter']:.0f} | {r['ms_loss']:.1f} "
                   f"({r['loss_share']:.1f} %) | {len(r['seeds'])} | {SURVEY.get(m, '—')} |")
    for m, why in T.TODO_ONE_STAGE.items():
        out.append(f"| {LABELS.get(m, m)} | TODO: not run ({why}) | | | | | | | "
                   f"{SURVEY.get(m, '—')} |")
    for m in ("random_biased", "ohem"):
        if m not in rows:
            out.append(f"| two-stage: {LABELS.get(m, m)} | not run here | | | | | | | "
                       f"{SURVEY[m]} |")
    for m, why in S.TODO_TWO_STAGE.items():
        out.append(f"| two-stage: {LABELS.get(m, m)} | TODO: not run ({why}) | | | | | | | "
                   f"{SURVEY[m]} |")
    out.append("")
    out.append(f"Settings: {settings}")
    return "\n".join(out)


def write_docs(path, text, profile):
    """Replaces what lies between the profile's table markers of docs/study.md
    (<!-- study-table-begin PROFILE --> ... <!-- study-table-end PROFILE -->)."""
    begin, end = f"<!-- study-table-begin {profile} -->", f"<!-- study-table-end {profile} -->"
    if not os.path.exists(path):
        return False
    doc = open(path, encoding="utf-8").read()
    if begin not in doc or end not in doc:
        return False
    head, rest = doc.split(begin, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w", encoding="utf-8") as f:
        f.write(head + begin + "\n" + text + "\n" + end + tail)
    return True


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the quick profile (about 10x shorter)")
    ap.add_argument("--methods", default=",".join(T.ONE_STAGE + S.TWO_STAGE))
    ap.add_argument("--seeds", default=None)
    ap.add_argument("--iters", type=int, default=None)
    ap.add_argument("--train-images", type=int, default=None)
    ap.add_argument("--val-images", type=int, default=None)
    ap.add_argument("--data-seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--docs", default=None,
                    help="docs/study.md to update (the table between its markers for the profile)")
    ap.add_argument("--fresh", action="store_true", help="ignore finished runs")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    prof = dict(PROFILES["quick" if a.quick else "full"])
    for k in ("iters", "train_images", "val_images"):
        if getattr(a, k) is not None:
            prof[k] = getattr(a, k)
    if a.seeds is not None:
        prof["seeds"] = tuple(int(s) for s in a.seeds.split(","))
    methods = [m for m in a.methods.split(",") if m]
    out = a.out or os.path.join("results", "quick" if a.quick else "full")
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    settings = (f"{prof['iters']} iterations of batch 8, {prof['train_images']} training and "
                f"{prof['val_images']} validation images ({data.SIZE} px, data seed "
                f"{a.data_seed}), seeds {','.join(map(str, prof['seeds']))}, "
                f"{torch.get_num_threads()} thread(s)")
    t_start = time.time()
    print(f"study: {settings}", flush=True)
    tr = T.Dataset(a.data_seed, "train", prof["train_images"])
    va = T.Dataset(a.data_seed, "val", prof["val_images"])
    tr_rpn = None
    if any(m in S.TWO_STAGE for m in methods):
        tr_rpn = T.Dataset(a.data_seed, "train", prof["train_images"], preset="rpn")
    pos, neg = tr.ratio()
    print(f"study: data ready in {time.time() - t_start:.0f} s; anchors per image "
          f"{tr.anchors.shape[0]}, foreground : background = 1 : {neg / pos:.0f} "
          f"({pos / len(tr):.1f} positives per image)", flush=True)
    jobs = [(m, s) for m in methods for s in prof["seeds"]]
    results, done_iters, spent = [], 0, 0.0
    total_iters = len(jobs) * prof["iters"]
    for j, (m, s) in enumerate(jobs):
        path = os.path.join(out, "runs", f"{m}_s{s}.json")
        key = {k: prof[k] for k in ("iters", "train_images", "val_images")}
        key["data_seed"] = a.data_seed
        if os.path.exists(path) and not a.fresh:
            r = json.load(open(path))
            if r.get("settings") == key:
                results.append(r)
                total_iters -= prof["iters"]
                print(f"study: [{j + 1}/{len(jobs)}] {m} seed {s}: kept, AP {100 * r['AP']:.1f}",
                      flush=True)
                continue
        t0 = time.time()
        last = [0.0]

        def log(it, m=m, s=s, j=j, t0=t0):
            now = time.time()
            if now - last[0] < 15 and it + 1 < prof["iters"]:
                return
            last[0] = now
            run_time = now - t0
            rate = (spent + run_time) / max(1, done_iters + it + 1)
            left = rate * (total_iters - done_iters - it - 1)
            print(f"study: [{j + 1}/{len(jobs)}] {m} seed {s} iter {it + 1}/{prof['iters']} "
                  f"elapsed {_fmt_time(now - t_start)} left ~{_fmt_time(left)}", flush=True)

        if m in S.TWO_STAGE:
            r = S.train(m, tr_rpn, va, seed=s, iters=prof["iters"], log=log)
        else:
            r = T.train(m, tr, va, seed=s, iters=prof["iters"], log=log)
        r["settings"] = key
        r["wall_time"] = time.time() - t0
        spent += r["wall_time"]
        done_iters += prof["iters"]
        with open(path, "w") as f:
            json.dump(r, f)
        results.append(r)
        print(f"study: [{j + 1}/{len(jobs)}] {m} seed {s}: AP {100 * r['AP']:.1f} AP50 "
              f"{100 * r['AP50']:.1f} ({r['wall_time']:.0f} s, {1000 * r['time_per_iter']:.0f} "
              f"ms/iter, loss {100 * r['loss_share']:.1f} %)", flush=True)
    rows = summarise(results)
    settings += (f"; fg:bg 1:{neg / pos:.0f}; the runs' own time (training + evaluation) "
                 f"{_fmt_time(sum(r.get('wall_time', 0) for r in results))}, this command "
                 f"{_fmt_time(time.time() - t_start)}")
    text = table_markdown(rows, settings)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(text + "\n")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"settings": settings, "rows": rows}, f, indent=1)
    try:
        from . import plots
        plots.all_plots(results, out)
    except ImportError as e:  # matplotlib missing: the table still stands
        print(f"study: no plots ({e})", file=sys.stderr)
    if a.docs and write_docs(a.docs, text, "quick" if a.quick else "full"):
        print(f"study: table written into {a.docs}")
    print(text)
    print(f"study: done in {_fmt_time(time.time() - t_start)}; results in {out}", flush=True)
    return rows


if __name__ == "__main__":
    main()
