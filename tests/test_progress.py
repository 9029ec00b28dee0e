"""Progress bars in a log: one redraw every ``LOG_INTERVAL_S`` seconds at most when stderr is not
a terminal (tqdm redrew, postfix and all, once per iteration: a line each in ``| tee log``)."""

from __future__ import annotations

import io

import torch

from operators.dense import MatrixOperator
from priors.classical import QuadraticPrior
from solvers import pnp_pgd
from solvers.progress import LOG_INTERVAL_S, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_bar_written_to_a_file_redraws_rarely_and_on_a_terminal_as_tqdm_does():
    log = io.StringIO()
    bar = progress_bar(total=500, desc="x", file=log)
    assert bar.mininterval == LOG_INTERVAL_S == 30.0
    for k in range(500):
        bar.set_postfix(k=k)
        bar.set_postfix_str(f"step {k}")
        bar.update(1)
    bar.close()
    assert log.getvalue().count("\r") <= 3  # the first draw and the close
    tty = progress_bar(total=5, file=_Terminal())
    assert tty.mininterval < 1.0
    tty.close()


def test_a_solver_progress_bar_in_a_log_is_not_a_line_per_iteration(capsys):
    g = torch.Generator().manual_seed(0)
    op = MatrixOperator(torch.randn(30, 25, generator=g, dtype=torch.float64), 5, 5)
    y = op.forward(torch.rand(1, 1, 5, 5, generator=g, dtype=torch.float64))
    r = pnp_pgd(op, y, QuadraticPrior(0.1), iters=200, tol=0, progress=True)
    assert r.iterations == 200
    assert capsys.readouterr().err.count("\r") <= 3  # (pytest's stderr is not a terminal)
