"""matplotlib PNGs of a study: training curves, AP bars with error bars, gradient shares."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _by_method(results):
    out = {}
    for r in results:
        out.setdefault(r["method"], []).append(r)
    return out


def _smooth(y, k=25):
    y = np.asarray(y, float)
    if len(y) < k:
        return y
    c = np.cumsum(np.r_[0.0, y])
    return (c[k:] - c[:-k]) / k


def training_curves(results, path):
    by = _by_method(results)
    n = len(by)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (m, rs) in zip(axes.flat, by.items()):
        for r in rs:
            c = r["curves"]
            k = 25
            y = _smooth(c["loss"], k)
            x = np.asarray(c["iter"][len(c["iter"]) - len(y):])
            ax.plot(x, y, lw=1, label=f"seed {r['seed']}")
        ax.set_title(m, fontsize=9)
        ax.set_yscale("log")
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle("training loss (classification + box, moving average of 25 iterations)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def ap_bars(results, path):
    by = _by_method(results)
    names = list(by)
    ap = [100 * np.mean([r["AP"] for r in by[m]]) for m in names]
    sd = [100 * np.std([r["AP"] for r in by[m]], ddof=1) if len(by[m]) > 1 else 0 for m in names]
    ap50 = [100 * np.mean([r["AP50"] for r in by[m]]) for m in names]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(names) + 2), 3.2))
    ax.bar(x - 0.2, ap, 0.4, yerr=sd, capsize=3, label="AP 0.50:0.95")
    ax.bar(x + 0.2, ap50, 0.4, label="AP50", alpha=0.6)
    for xi, (m) in zip(x, names):
        ax.scatter([xi - 0.2] * len(by[m]), [100 * r["AP"] for r in by[m]], s=6, c="k", zorder=3)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("COCO-style AP (%)")
    ax.set_title("validation AP: mean ± std over seeds (dots: single seeds)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def gradient_shares(results, path):
    by = _by_method(results)
    n = len(by)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False,
                             sharey=True)
    for ax, (m, rs) in zip(axes.flat, by.items()):
        it = np.asarray(rs[0]["shares"]["iter"])
        parts = [np.mean([r["shares"][k] for r in rs], axis=0)
                 for k in ("fg", "easy_bg", "hard_bg")]
        ax.stackplot(it, *parts, labels=("foreground", "easy background", "hard background"),
                     colors=("tab:green", "tab:blue", "tab:red"), alpha=0.8)
        ax.set_ylim(0, 1)
        ax.set_title(m, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.suptitle("share of sum |dL/dlogit| (mean over seeds); hard background: sigmoid >= 0.1",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def all_plots(results, out):
    if not results:
        return []
    paths = [os.path.join(out, f) for f in ("curves.png", "ap.png", "gradient_shares.png")]
    training_curves(results, paths[0])
    ap_bars(results, paths[1])
    gradient_shares(results, paths[2])
    return paths
