"""`recon train` under torchrun with two gloo processes: the replicas hold identical weights, the
update is the optimizer step on the gradient averaged over the ranks (each rank drawing its own
seeded batch), rank 0's checkpoint holds those weights, and an interrupted run resumes exactly.

The test launches ``torchrun --nproc-per-node 2 -m tests.test_ddp HASH_DIR STOP_AFTER -- ARGS``;
run as a module, this file runs the ``recon train`` subcommand (its parser and ``run``) and each
rank writes the SHA-256 of its model's weights before and after training to HASH_DIR/rank{r}.json.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # torchrun processes: `pytest -m "not slow"` skips them

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")
TINY = ["--kind", "aelpn", "--data", "ellipses", "--width", "4", "--levels", "1", "--depth", "1"]
TINY += ["--patch", "16", "--batch", "2", "--seed", "3", "--quiet", "--val-every", "1000"]


def state_hash(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _run_torchrun(tmp: Path, tag: str, train_args: list[str], stop_after: int = 0) -> list[dict]:
    hashes = tmp / f"hashes-{tag}"
    hashes.mkdir()
    cmd = [str(TORCHRUN), "--standalone", "--nproc-per-node", "2", "-m", "tests.test_ddp"]
    cmd += [str(hashes), str(stop_after), "--", *train_args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = Path(train_args[train_args.index("--out") + 1])
    before = out.read_bytes() if out.exists() else None
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    untouched = (out.read_bytes() if out.exists() else None) == before
    if proc.returncode != 0 and untouched and _launch_failed(proc.stdout + proc.stderr):
        # torchrun --standalone picks free ports before binding them, so on a busy machine the
        # launch can lose a port race. Only that is retried, once, and only when the run left
        # its checkpoint as it was (so the retry starts from the same state).
        for f in hashes.iterdir():
            f.unlink()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return [json.loads((hashes / f"rank{r}.json").read_text()) for r in range(2)]


LAUNCH_ERRORS = (
    "address already in use",
    "distnetworkerror",
    "rendezvousconnectionerror",
    "rendezvoustimeouterror",
    "connection reset by peer",
    "connection refused",
)


def _launch_failed(output: str) -> bool:
    """True if torchrun failed to set up its process group (a socket or rendezvous error)."""
    low = output.lower()
    return any(e in low for e in LAUNCH_ERRORS)


def _checkpoint_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from priors.checkpoint import read_checkpoint

    tensors, info = read_checkpoint(path)
    return tensors, info


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """An uninterrupted 2-process run of 4 steps."""
    tmp = tmp_path_factory.mktemp("ddp")
    ckpt = tmp / "straight.safetensors"
    ranks = _run_torchrun(tmp, "straight", [*TINY, "--steps", "4", "--out", str(ckpt)])
    return tmp, ckpt, ranks


def test_replicas_identical_and_trained(straight):
    _, ckpt, ranks = straight
    assert ranks[0]["initial"] == ranks[1]["initial"]  # seeded init, equal on both ranks
    assert ranks[0]["final"] == ranks[1]["final"]  # gradients all-reduced: same steps
    assert ranks[0]["final"] != ranks[0]["initial"]  # and training did change the weights
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4
    tensors, info = _checkpoint_weights(ckpt)
    model_state = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    assert state_hash(model_state) == ranks[0]["final"]  # rank 0 wrote what both replicas hold
    assert info["train"]["world_size"] == 2 and info["meta"]["processes"] == 2
    # each rank drew from its own generator (seed + rank), and both states are saved for resume
    assert not torch.equal(tensors["rng.generator"], tensors["rng.generator.rank1"])


@pytest.fixture(scope="module")
def interrupted(straight):
    """The same run stopped after its first step (rank 0's checkpoint then holds step 1)."""
    tmp = straight[0]
    ckpt = tmp / "resumed.safetensors"
    args = [*TINY, "--steps", "4", "--out", str(ckpt)]
    first = _run_torchrun(tmp, "first", args, stop_after=1)
    return ckpt, args, first


def test_step_is_the_rank_averaged_gradient_step(interrupted):
    """Step 1 under torchrun equals, by hand: per-rank loss gradients on batches drawn with
    seeds 3 and 4, averaged, clipped to norm 1, one Adam step, nonnegativity clamp."""
    from priors.lpn import ConvLPN
    from priors.training import TrainConfig
    from recon.train import make_sampler

    ckpt, _, first = interrupted
    assert first[0]["steps"] == first[1]["steps"] == 1
    tensors, _ = _checkpoint_weights(ckpt)
    got = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    assert state_hash(got) == first[0]["final"] == first[1]["final"]

    cfg = TrainConfig(steps=4, batch=2, seed=3)
    lr, gamma = cfg.phase(0)
    assert gamma is None  # the L1 warm-up phase
    sampler, _, _ = make_sampler("ellipses", 16, 1)
    torch.manual_seed(3)
    model = ConvLPN(kind="aelpn", width=4, levels=1, depth=1).train()
    grads = []
    for rank in range(2):
        gen = torch.Generator().manual_seed(cfg.seed + rank)
        clean = sampler(cfg.batch, gen)
        noisy = clean + cfg.sigma * torch.randn(clean.shape, generator=gen)
        model.zero_grad()
        (model.prox(noisy, create_graph=True) - clean).abs().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for p, g0, g1 in zip(model.parameters(), *grads, strict=True):
        p.grad = (g0 + g1) / 2
    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    opt.step()
    model.clamp_()
    want = model.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    # a single rank's gradient would have given different weights: the averaging matters
    assert any(not torch.allclose(g0, g1) for g0, g1 in zip(*grads, strict=True))


def test_resume_after_interruption_is_exact(straight, interrupted):
    tmp, _, ranks = straight
    _, args, _ = interrupted
    resumed = _run_torchrun(tmp, "resumed", args)
    assert resumed[0]["steps"] == resumed[1]["steps"] == 4
    assert resumed[0]["final"] == resumed[1]["final"] == ranks[0]["final"]


def _worker(hash_dir: str, stop_after: int, train_args: list[str]) -> int:
    """Run under torchrun: `recon train` with train_prior wrapped to record weight hashes."""
    import argparse
    import functools

    import recon.train
    from priors.training import train_prior

    def recorded(model, *args, **kwargs):
        initial = state_hash(model.state_dict())
        if stop_after:
            kwargs["stop_after"] = stop_after
        res = train_prior(model, *args, **kwargs)
        rank = int(os.environ["RANK"])
        out = {"initial": initial, "final": state_hash(res.model.state_dict()), "steps": res.steps}
        Path(hash_dir, f"rank{rank}.json").write_text(json.dumps(out))
        return res

    recon.train.train_prior = functools.wraps(train_prior)(recorded)
    # the `recon train` subcommand's own parser and run (as recon.cli wires them)
    parser = argparse.ArgumentParser(prog="recon")
    recon.train.add_parser(parser.add_subparsers(dest="command", required=True))
    return recon.train.run(parser.parse_args(["train", *train_args]))


if __name__ == "__main__":
    torch.set_num_threads(1)
    sep = sys.argv.index("--")
    sys.exit(_worker(sys.argv[1], int(sys.argv[2]), sys.argv[sep + 1 :]))
