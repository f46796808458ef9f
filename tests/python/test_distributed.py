"""torch.distributed with 2 processes (gloo, localhost): GHMC, EqualizedFocalLoss and
ResidualObjectnessLoss with
distributed=True give every rank the rows of the single-process gradient of the whole batch, and
the same state as one process."""
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import fgbg
from helpers import make_batch

N, C, STEPS = 64, 5, 3


def _batches():
    return [make_batch(N, C, seed=100 + s, p_pos=0.2) for s in range(STEPS)]


def _run(model, rank, world):
    """Per step: (loss, gradient rows of this rank); then the final state."""
    out = []
    rows = slice(rank * N // world, (rank + 1) * N // world)
    for x, y, _ in _batches():
        a = x[rows].clone().requires_grad_()
        if isinstance(model, fgbg.nn.EqualizedFocalLoss):
            loss = model(a, y[rows], avg_factor=float((y > 0).sum()))  # the global normaliser
        elif isinstance(model, fgbg.nn.ResidualObjectnessLoss):
            stages = torch.linspace(-3, 2, 2 * N, dtype=x.dtype).reshape(N, 2)
            loss = model(a, y[rows], stages[rows] + x[rows, :2])
        else:
            loss = model(a, y[rows])
        loss.backward()
        out.append((loss.detach(), a.grad))
    return out, model.state.clone()


def _models(distributed):
    return [fgbg.nn.GHMC(bins=10, momentum=0.75, distributed=distributed),
            fgbg.nn.EqualizedFocalLoss(num_classes=C, distributed=distributed),
            fgbg.nn.ResidualObjectnessLoss(ema_momentum=0.5, distributed=distributed)]


def _worker(rank, world, port, path):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # containers: no resolvable hostname needed
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save([_run(m, rank, world) for m in _models(True)], f"{path}.{rank}")
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_equal_one_process_on_the_whole_batch(tmp_path):
    path = str(tmp_path / "rank")
    mp.spawn(_worker, args=(2, _free_port(), path), nprocs=2, join=True)
    ranks = [torch.load(f"{path}.{r}") for r in range(2)]
    for k, model in enumerate(_models(False)):
        single, state = _run(model, 0, 1)
        for step in range(STEPS):
            loss = ranks[0][k][0][step][0] + ranks[1][k][0][step][0]
            torch.testing.assert_close(loss, single[step][0], rtol=1e-12, atol=1e-15)
            grad = torch.cat([ranks[0][k][0][step][1], ranks[1][k][0][step][1]])
            torch.testing.assert_close(grad, single[step][1], rtol=1e-11, atol=1e-15)
        # both ranks hold the same state, the single process's (to rounding for EFL's sums)
        assert torch.equal(ranks[0][k][1], ranks[1][k][1])
        if k != 1:
            assert torch.equal(ranks[0][k][1], state)
        else:
            got = fgbg.efl_inspect(ranks[0][k][1])
            exp = fgbg.efl_inspect(state)
            torch.testing.assert_close(torch.tensor(got["pos_grad"]),
                                       torch.tensor(exp["pos_grad"]), rtol=1e-13, atol=0)
            assert got["updates"] == exp["updates"] == STEPS
