"""Plain PyTorch implementations of the losses' formulas (the oracles of the tests) and inputs."""
import torch
import torch.nn.functional as TF


def make_batch(n, c, seed=0, dtype=torch.float64, p_ignore=0.1, p_pos=0.3, scale=3.0,
               softmax=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c + (1 if softmax else 0), generator=g, dtype=torch.float64) * scale
    u = torch.rand(n, generator=g)
    cls = torch.randint(1, c + 1, (n,), generator=g)
    y = torch.where(u < p_pos, cls, torch.zeros_like(cls))
    y = torch.where(u > 1 - p_ignore, torch.full_like(y, -1), y)
    q = torch.rand(n, generator=g, dtype=torch.float64) * 0.9 + 0.05
    return x.to(dtype), y, q.to(dtype)


def one_hot(y, c, dtype=torch.float64, values=None):
    t = torch.zeros(y.shape[0], c, dtype=dtype)
    pos = (y > 0).nonzero().flatten()
    t[pos, y[pos] - 1] = 1.0 if values is None else values[pos].to(dtype)
    return t


def valid(y):
    return (y >= 0).to(torch.float64)


def reduce(e, y, reduction, avg_factor=None, per_anchor=False, norm_target=None):
    """fgbg's normalisers applied to an unnormalised per-element loss e (0 on ignored rows)."""
    if reduction == "none":
        return e
    s = e.sum()
    if reduction == "sum":
        return s
    if avg_factor is not None:
        return s / avg_factor
    if reduction == "mean":
        count = (y >= 0).sum() * (1 if per_anchor else e.shape[1])
        return s / max(1, int(count))
    if reduction == "num_positives":
        return s / max(1, int((y > 0).sum()))
    if reduction == "target_sum":
        return s / max(1.0, float(norm_target))
    raise ValueError(reduction)


def ref_bce(x, y):
    t = one_hot(y, x.shape[1], x.dtype)
    return TF.binary_cross_entropy_with_logits(x, t, reduction="none") * valid(y)[:, None]


def ref_focal(x, y, alpha=0.25, gamma=2.0):
    import torchvision

    t = one_hot(y, x.shape[1], x.dtype)
    return torchvision.ops.sigmoid_focal_loss(x, t, alpha=alpha, gamma=gamma,
                                              reduction="none") * valid(y)[:, None]


def ref_softmax_ce(x, y):
    return TF.cross_entropy(x, y, ignore_index=-1, reduction="none")


def ref_softmax_focal(x, y, alpha=0.25, gamma=2.0):
    yy = y.clamp(min=0)
    logp = torch.log_softmax(x, 1).gather(1, yy[:, None])[:, 0]
    p = logp.exp()
    if alpha < 0:
        a = torch.ones_like(p)
    else:
        a = torch.where(yy > 0, torch.full_like(p, alpha), torch.full_like(p, 1 - alpha))
    return -a * (1 - p) ** gamma * logp * valid(y)


def ref_qfl(x, y, q, beta=2.0):
    t = one_hot(y, x.shape[1], x.dtype, values=q)
    s = torch.sigmoid(x)
    return TF.binary_cross_entropy_with_logits(x, t, reduction="none") * (t - s).abs() ** beta \
        * valid(y)[:, None]


def ref_vfl(x, y, q, alpha=0.75, gamma=2.0, iou_weighted=True):
    t = one_hot(y, x.shape[1], x.dtype, values=q.clamp(min=1e-6))
    s = torch.sigmoid(x)
    pos_w = t if iou_weighted else (t > 0).to(x.dtype)
    w = torch.where(t > 0, pos_w, alpha * s ** gamma)
    return TF.binary_cross_entropy_with_logits(x, t, reduction="none") * w * valid(y)[:, None]


def ref_soft_target(x, y, t):
    tt = one_hot(y, x.shape[1], x.dtype, values=t)
    return TF.binary_cross_entropy_with_logits(x, tt, reduction="none") * valid(y)[:, None]


def ref_efl(x, y, ratio, alpha=0.25, gamma_b=2.0, scale=8.0):
    """EFL with the per-class ratio g_j (constants): focal with gamma_j, times gamma_j/gamma_b."""
    t = one_hot(y, x.shape[1], x.dtype)
    gj = gamma_b + scale * (1 - torch.as_tensor(ratio, dtype=x.dtype))
    p = torch.sigmoid(x)
    pt = p * t + (1 - p) * (1 - t)
    at = alpha * t + (1 - alpha) * (1 - t)
    ce = TF.binary_cross_entropy_with_logits(x, t, reduction="none")
    return at * (gj / gamma_b) * (1 - pt) ** gj * ce * valid(y)[:, None]


def ref_ghmc(x, y, bins=10, moving=None, momentum=0.0):
    """GHM-C value (beta detached); returns (loss, new moving averages)."""
    c = x.shape[1]
    t = one_hot(y, c, x.dtype)
    v = valid(y)[:, None].expand_as(x)
    g = (torch.sigmoid(x.detach()) - t).abs()
    edges = [float(torch.tensor(k / bins, dtype=torch.float32)) for k in range(bins + 1)]
    edges[-1] = float(torch.tensor(edges[-1], dtype=torch.float32) + torch.tensor(1e-6))
    beta = torch.zeros_like(x)
    tot = max(1.0, float(v.sum()))
    n = 0
    moving = list(moving) if moving is not None else [0.0] * bins
    for k in range(bins):
        inds = (g >= edges[k]) & (g < edges[k + 1]) & (v > 0)
        cnt = int(inds.sum())
        if cnt:
            n += 1
            if momentum > 0:
                moving[k] = momentum * moving[k] + (1 - momentum) * cnt
                beta[inds] = tot / moving[k]
            else:
                beta[inds] = tot / cnt
    if n:
        beta = beta / n
    ce = TF.binary_cross_entropy_with_logits(x, t, reduction="none")
    return (beta * ce).sum() / tot, moving
