"""Training a learned proximal network as a denoiser: L1 warm-up, then proximal matching.

Pairs are (x, x + σ·n) (or, for a share of each batch, pairs with a structured error such as
``data.ct_artifacts``) with x drawn by a ``sampler(batch, generator) -> (B, C, H, W)`` of clean
images (phantoms on the fly, crops of natural images, a user's scans: see ``recon.train``), so
this module needs no knowledge of data formats. Loss schedule (Fang et al. 2024):

* steps [0, l1_fraction·steps): L1 loss mean|f(y) − x| at lr ``lr_l1``;
* then equal stages with γ = γ_k · gamma_unit (γ_k = 8, 4, 2, 1 by default) at lr ``lr_pm``, using
  the proximal matching loss ℓ_γ = mean_batch[1 − exp(−||f(y) − x||² / (d·γ²))], d = C·H·W;
* or, with ``loss="mse"``, the mean squared error mean||f(y) − x||²/d after the warm-up: the
  MMSE denoiser E[x | y] = y + σ²∇log p_σ(y) is itself the gradient of the convex function
  ½||y||² + σ² log p_σ(y) (its Jacobian is the posterior covariance / σ², positive
  semi-definite), so an LPN can represent it exactly; it is what a Gaussian-denoising PSNR
  rewards, where proximal matching aims at the MAP prox of −log p.

``lr_schedule="cosine"`` decays the post-warm-up learning rate from ``lr_pm`` to
``lr_floor``·``lr_pm`` along half a cosine over the remaining steps (a fine-tune's end).

Adam; after every step the z-path weights are clamped to ≥ 0 (input convexity). Every
``ckpt_every`` steps the model, the optimizer, the RNG state and the history are written
atomically, so an interrupted run resumes exactly where it stopped (same weights as an
uninterrupted run). All randomness (patches, flips, noise) comes from one seeded generator.

Several processes (``torchrun --nproc-per-node N recon train ...``): when a ``torch.distributed``
process group is initialized, the model is wrapped in DistributedDataParallel. Rank r draws its
own batches from a generator seeded with seed + r; DDP averages the gradients over the ranks
(all-reduce, divided by N) during ``backward``, so each step uses the gradient of the mean loss
over N·batch images and every replica takes the same Adam step and applies the same clamp (the
replicas start equal: DDP broadcasts rank 0's weights). Rank 0 alone validates, shows progress
and writes the checkpoint, which also holds every rank's generator state, so a resume with the
same N continues exactly.

DDP and the prox's autograd: f(v) = ∇ψ(v) is computed with ``torch.autograd.grad(ψ, v,
create_graph=True)`` inside the forward. That inner call differentiates with respect to the
*input* only, so it never runs the parameters' gradient-accumulation nodes that DDP's reducer
hooks; the parameters' gradients are accumulated once, by the outer ``loss.backward()`` through
the double-backward graph, which is where DDP all-reduces them. ``tests/test_ddp.py`` checks the
replicas stay identical; the averaged gradient was also checked against a hand-computed mean of
the per-rank gradients (equal to the last bit with 2 ranks).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from priors.checkpoint import load_model_state, read_checkpoint, save_checkpoint
from priors.lpn import set_noise_level, takes_noise_level, told_noise_level, unwrap

__all__ = [
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "train_prior",
    "proximal_matching_loss",
    "denoise_psnr",
    "noisy_psnr",
    "same_schedule",
    "config_changes",
]

LOSSES = ("prox-matching", "mse", "mse-relative")
SIGMA_SAMPLING = ("uniform", "log")
LR_SCHEDULES = ("constant", "cosine")

Sampler = Callable[[int, torch.Generator], torch.Tensor]
PairSampler = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class TrainConfig:
    sigma: float = 0.1
    sigma_max: float | None = None  # if set: σ per training image ~ U[sigma, sigma_max] ("blind")
    sigma_sampling: str = "uniform"  # blind σ: "uniform" in [sigma, sigma_max], or "log"-uniform
    steps: int = 2000
    batch: int = 16
    lr_l1: float = 1e-3
    lr_pm: float = 1e-4
    l1_fraction: float = 0.5
    gammas: tuple[float, ...] = (8.0, 4.0, 2.0, 1.0)
    gamma_unit: float = 0.08
    seed: int = 0
    val_every: int = 100
    ckpt_every: int = 100
    grad_clip: float = 1.0
    artifact_fraction: float = 0.0  # share of each batch drawn from ``train_prior(pairs=...)``
    contrast_min: float = 1.0  # if < 1: each clean image's contrast scaled by a ~ U[min, 1]
    # after the L1 warm-up: "prox-matching", "mse", or "mse-relative" (each image's squared
    # error over its σ²: every noise level counts alike, not mostly the largest)
    loss: str = "prox-matching"
    lr_schedule: str = "constant"  # after the warm-up: "constant" or "cosine"
    lr_floor: float = 0.05  # cosine: the last step's lr as a fraction of lr_pm
    # Firm nonexpansiveness (see ``priors.jacobian``): + fne_weight·mean relu(λ̂ − fne_target)²,
    # λ̂ the Rayleigh quotient of ∇²ψ after ``fne_iters`` power iterations, at ``fne_batch``
    # inputs per step: clean images plus t·σ·n (t ~ U[0, 1]), told σ log-uniform in
    # [fne_sigma_min, sigma_max or sigma]. The weight ramps up linearly over the first
    # ``fne_ramp`` of the steps (a sudden strong penalty collapses the network to its
    # pass-through). 0: off. The target is 1: an AE-LPN's Jacobian keeps constants (eigenvalue
    # exactly 1), so λ_max ≥ 1 always, and a target below 1 shrinks every fine detail by that
    # factor at every σ (with a 0.8 target, denoising at σ = 0.01 ended below the noisy input).
    fne_weight: float = 0.0
    fne_target: float = 1.0
    fne_batch: int = 4
    fne_iters: int = 4
    fne_ramp: float = 0.3
    fne_sigma_min: float = 0.005

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.sigma_sampling not in SIGMA_SAMPLING:
            raise ValueError(
                f"sigma_sampling must be one of {SIGMA_SAMPLING}, got {self.sigma_sampling!r}"
            )
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        if not (self.fne_weight >= 0 and math.isfinite(self.fne_weight)):
            raise ValueError(f"fne_weight must be finite and >= 0, got {self.fne_weight}")
        if self.fne_weight > 0:
            if not self.fne_target > 0:
                raise ValueError(f"fne_target must be > 0, got {self.fne_target}")
            if self.fne_batch < 1 or self.fne_iters < 1:
                raise ValueError("fne_batch and fne_iters must be >= 1")
            if not 0 <= self.fne_ramp <= 1:
                raise ValueError(f"fne_ramp must be in [0, 1], got {self.fne_ramp}")
            if not 0 < self.fne_sigma_min <= (self.sigma_max or self.sigma):
                raise ValueError(
                    f"fne_sigma_min must be in (0, {self.sigma_max or self.sigma}], got "
                    f"{self.fne_sigma_min}"
                )

    def fne_weight_at(self, step: int) -> float:
        """The penalty weight at ``step``: a linear ramp over the first fne_ramp of the steps."""
        ramp = self.fne_ramp * self.steps
        if self.fne_weight == 0 or ramp <= 0:
            return self.fne_weight
        return self.fne_weight * min(1.0, (step + 1) / ramp)

    def phase(self, step: int) -> tuple[float, float | None]:
        """(learning rate, γ per pixel or None for the L1 phase) at a given step.

        With ``loss="mse"`` γ is 0 after the warm-up (no γ: the squared error is used)."""
        n_l1 = int(round(self.l1_fraction * self.steps))
        if step < n_l1:
            return self.lr_l1, None
        lr = self.lr_pm
        if self.lr_schedule == "cosine":
            t = (step - n_l1) / max(1, self.steps - n_l1 - 1)
            lr *= self.lr_floor + (1 - self.lr_floor) * 0.5 * (1 + math.cos(math.pi * min(t, 1.0)))
        if self.loss in ("mse", "mse-relative"):
            return lr, 0.0
        stage_len = max(1, math.ceil((self.steps - n_l1) / len(self.gammas)))
        k = min((step - n_l1) // stage_len, len(self.gammas) - 1)
        return lr, self.gammas[k] * self.gamma_unit


def same_schedule(old: TrainConfig, new: TrainConfig, steps: int) -> bool:
    """Whether ``old`` and ``new`` give each of the first ``steps`` steps the same learning rate,
    γ and penalty weight: a run of ``old`` stopped after ``steps`` steps and continued under
    ``new`` (e.g. with more steps) then ends exactly where a run of ``new`` from the start does,
    when nothing else differs."""
    return all(
        old.phase(k) == new.phase(k) and old.fne_weight_at(k) == new.fne_weight_at(k)
        for k in range(steps)
    )


def config_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``"key: old -> new"`` for each key whose value differs between two configs (a key one of
    them lacks reads as None), sorted by key."""
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during ``train_prior``: ``step`` is the number of steps done, ``saved`` the step
    the checkpoint holds for this run (None: nothing saved or resumed yet)."""

    def __init__(self, step: int, saved: int | None) -> None:
        super().__init__(step, saved)
        self.step, self.saved = step, saved


@dataclass
class TrainResult:
    model: nn.Module
    history: dict[str, list] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0


def proximal_matching_loss(
    pred: torch.Tensor, target: torch.Tensor, gamma: float | torch.Tensor
) -> torch.Tensor:
    """mean over the batch of 1 − exp(−||pred − target||² / (d·γ²)), d = entries per item;
    γ a number or one per item (B,)."""
    err = (pred - target).flatten(1)
    d = err.shape[1]
    return (1.0 - torch.exp(-err.pow(2).sum(1) / (d * gamma**2))).mean()


def _noise_levels(cfg: TrainConfig, batch: int, gen: torch.Generator) -> torch.Tensor | float:
    """σ for this batch: cfg.sigma, or one σ per image ~ U[sigma, sigma_max] (B,)."""
    if cfg.sigma_max is None:
        return cfg.sigma
    u = torch.rand(batch, generator=gen)
    if cfg.sigma_sampling == "log":
        return cfg.sigma * (cfg.sigma_max / cfg.sigma) ** u
    return cfg.sigma + (cfg.sigma_max - cfg.sigma) * u


def _fne_penalty(
    model: nn.Module, clean: torch.Tensor, cfg: TrainConfig, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(penalty, λ̂ per input) at ``cfg.fne_batch`` of the batch's clean images (see
    ``TrainConfig.fne_weight``); a model without a σ input sees x + t·σ·n alone."""
    from priors.jacobian import eigenvalue_penalty

    x = clean[: cfg.fne_batch]
    n = x.shape[0]
    lo, hi = math.log(cfg.fne_sigma_min), math.log(cfg.sigma_max or cfg.sigma)
    sig = torch.exp(lo + (hi - lo) * torch.rand(n, generator=gen)).to(x)
    t = torch.rand(n, generator=gen).to(x)
    noise = torch.randn(x.shape, generator=gen).to(x)
    inputs = x + (t * sig).view(-1, *([1] * (x.ndim - 1))) * noise  # (B, 1, 1, 1) scales
    inner = unwrap(model)
    before = getattr(inner, "noise_level", None)
    if takes_noise_level(model):
        set_noise_level(model, sig)
    try:
        return eigenvalue_penalty(inner, inputs, cfg.fne_target, cfg.fne_iters, gen)
    finally:
        if takes_noise_level(model):
            set_noise_level(model, before)


@torch.no_grad()
def _noisy(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    gen = torch.Generator(device=clean.device).manual_seed(seed)
    return clean + sigma * torch.randn(clean.shape, generator=gen, device=clean.device)


def _mean_psnr(out: torch.Tensor, clean: torch.Tensor) -> float:
    """Mean PSNR over the images, data_range = max − min of each clean image; constant images
    (no range: a flat patch) are left out of the mean, NaN when all are."""
    mse = (out - clean).flatten(1).pow(2).mean(1)
    rng = clean.flatten(1).amax(1) - clean.flatten(1).amin(1)
    keep = rng > 0
    if not bool(keep.any()):
        return math.nan
    return float((10 * torch.log10(rng[keep].pow(2) / mse[keep])).mean())


def denoise_psnr(model: nn.Module, clean: torch.Tensor, sigma: float, seed: int = 1234) -> float:
    """Mean PSNR (data_range = max − min of each clean image) of model.prox(clean + σ·n)."""
    noisy = _noisy(clean, sigma, seed)
    with told_noise_level(model, sigma):  # a noise_input model is told σ
        out = model.prox(noisy, create_graph=False)
    return _mean_psnr(out, clean)


def noisy_psnr(clean: torch.Tensor, sigma: float, seed: int = 1234) -> float:
    """The PSNR of the noisy input ``denoise_psnr`` denoises (the same noise): what the
    validation PSNR is to be read against."""
    return _mean_psnr(_noisy(clean, sigma, seed), clean)


def _vary_contrast(clean: torch.Tensor, contrast_min: float, gen: torch.Generator) -> torch.Tensor:
    """x' = m + a·(x − m) per image, m its mean and a ~ U[contrast_min, 1] (a no-op at 1).

    At a fixed σ this shows every model noise at several levels relative to the content. For an
    affine-equivariant prox it is the same as training on σ/a at full contrast (blind
    training); a model that is not equivariant sees lower-contrast images at the same σ."""
    if contrast_min >= 1.0:
        return clean
    a = contrast_min + (1.0 - contrast_min) * torch.rand(clean.shape[0], generator=gen)
    a = a.view(-1, *([1] * (clean.ndim - 1))).to(clean)
    m = clean.mean(dim=tuple(range(1, clean.ndim)), keepdim=True)
    return m + a * (clean - m)


def _training_batch(
    cfg: TrainConfig,
    sampler: Sampler,
    pairs: PairSampler | None,
    gen: torch.Generator,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(clean, degraded, level): level is None when every image has noise σ = cfg.sigma, else
    each image's error level (B,): its σ (blind training) or, for the pairs from ``pairs``
    (a share ``cfg.artifact_fraction`` of the batch), the RMS of its error."""
    n_art = 0
    if pairs is not None and cfg.artifact_fraction > 0:
        n_art = int((torch.rand(cfg.batch, generator=gen) < cfg.artifact_fraction).sum())
    n_gauss = cfg.batch - n_art
    cleans, noisies, levels = [], [], []
    if n_gauss:
        clean = _vary_contrast(sampler(n_gauss, gen), cfg.contrast_min, gen).to(device)
        sig = _noise_levels(cfg, n_gauss, gen)
        if torch.is_tensor(sig):
            sig = sig.to(device)
            levels.append(sig)
            sig = sig.view(-1, *([1] * (clean.ndim - 1)))
        else:
            levels.append(torch.full((n_gauss,), float(sig), device=device))
        cleans.append(clean)
        noisies.append(clean + sig * torch.randn(clean.shape, generator=gen).to(device))
    if n_art:
        clean, degraded = (t.to(device) for t in pairs(n_art, gen))
        cleans.append(clean)
        noisies.append(degraded)
        levels.append((degraded - clean).flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-6))
    level = torch.cat(levels) if (n_art or cfg.sigma_max is not None) else None
    return torch.cat(cleans), torch.cat(noisies), level


def train_prior(
    model: nn.Module,
    sampler: Sampler,
    cfg: TrainConfig,
    checkpoint: str | Path | None = None,
    val: torch.Tensor | None = None,
    meta: dict[str, Any] | None = None,
    progress: bool = True,
    resume: bool = True,
    stop_after: int | None = None,
    pairs: PairSampler | None = None,
) -> TrainResult:
    """Train ``model`` in place; returns it with its history.

    Args:
        sampler: clean images (B, C, H, W) from (batch size, torch.Generator).
        checkpoint: file to write every ``cfg.ckpt_every`` steps and at the end; if it exists
            and ``resume`` is true, training continues from it exactly. A loss that is not
            finite stops training with a ValueError naming the step, before the step changes
            the weights (the checkpoint keeps the last finite state); Ctrl-C raises
            ``TrainingInterrupted``.
        val: held-out clean images for validation PSNR at σ = cfg.sigma.
        stop_after: stop (with a checkpoint) after this many steps in this call (to test resume).
        pairs: (clean, degraded) pairs with a structured error (e.g. ``data.ct_artifacts``);
            each batch item is drawn from it with probability ``cfg.artifact_fraction``, the
            others get Gaussian noise as usual; γ follows each pair's RMS error.
    """
    device = next(model.parameters()).device
    rank, world = _rank_world()
    gen = torch.Generator().manual_seed(cfg.seed + rank)
    opt = torch.optim.Adam(_param_groups(model), lr=cfg.lr_l1)
    hist: dict[str, list] = {"step": [], "loss": [], "val_step": [], "val_psnr": [], "seconds": []}
    val_input = noisy_psnr(val, cfg.sigma) if val is not None else None
    step, elapsed = 0, 0.0
    ckpt = Path(checkpoint) if checkpoint else None
    saved: int | None = None  # the step the checkpoint holds for this run
    if ckpt is not None and resume and ckpt.exists():
        step, elapsed, hist = _restore(ckpt, model, opt, gen, rank, world)
        saved = step
    meta = {"sigma": cfg.sigma, "train_config": asdict(cfg), **(meta or {})}
    if world > 1:
        meta["processes"] = world
        if cfg.fne_weight > 0:
            raise ValueError(
                "the firm-nonexpansiveness penalty (fne_weight) runs outside DDP's forward: "
                "train with it in one process"
            )
    net = _wrap_ddp(model, device) if world > 1 else None

    def save() -> None:
        nonlocal saved
        if ckpt is None:
            return
        states = _gather_generator_states(gen, world)  # a collective: every rank takes part
        if rank == 0:
            state = {"step": step, "seconds": elapsed, "history": hist, "world_size": world}
            rng = {"generator": states[0]}
            rng.update({f"generator.rank{r}": st for r, st in enumerate(states) if r > 0})
            save_checkpoint(
                ckpt, model, {**meta, "steps": step, "train_seconds": elapsed}, opt, state, rng
            )
        saved = step

    bar = None
    if progress and rank == 0:
        from solvers.progress import progress_bar

        desc = f"train {getattr(model, 'kind', '')}"
        bar = progress_bar(total=cfg.steps, initial=step, desc=desc)
    model.train()
    t0 = time.perf_counter() - elapsed
    done_here = 0
    try:
        while step < cfg.steps:
            lam_hat, loss_value, gamma_stage = _step(
                model, net, opt, cfg, sampler, pairs, gen, device, step, hist, world
            )
            bad = None if math.isfinite(loss_value) else f"the loss became {loss_value}"
            if bad is None and not _clip_and_step(model, opt, cfg):
                bad = "the gradient became NaN or infinite"
            if bad is not None:  # the weights are those of the step before
                kept = f"{ckpt} keeps step {saved}" if saved is not None else "nothing was saved"
                raise ValueError(
                    f"training stopped: {bad} at step {step + 1} ({kept}); check the training "
                    "data, or lower the learning rate"
                )
            step += 1
            done_here += 1
            elapsed = time.perf_counter() - t0
            hist["step"].append(step)
            hist["loss"].append(loss_value)
            hist["seconds"].append(elapsed)
            if val is not None and rank == 0 and (step % cfg.val_every == 0 or step == cfg.steps):
                model.eval()
                hist["val_step"].append(step)
                hist["val_psnr"].append(denoise_psnr(model, val.to(device), cfg.sigma))
                model.train()
            if bar is not None:
                post = {
                    "loss": f"{loss_value:.4f}",
                    "phase": _phase_label(gamma_stage, cfg.loss),
                }
                if hist["val_psnr"]:
                    post["val"] = f"{hist['val_psnr'][-1]:.2f}dB (input {val_input:.2f})"
                if lam_hat is not None:
                    post["λmax"] = f"{float(lam_hat.max()):.2f}"
                bar.set_postfix(post)
                bar.update(1)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save()
            if stop_after is not None and done_here >= stop_after:
                save()
                break
    except KeyboardInterrupt:
        raise TrainingInterrupted(step, saved) from None
    finally:
        if bar is not None:
            bar.close()
    if takes_noise_level(model):
        set_noise_level(model, None)  # not the last batch's σs: a user sets their own
    model.eval()
    return TrainResult(model=model, history=hist, seconds=elapsed, steps=step)


def _step(
    model: nn.Module,
    net: nn.Module | None,
    opt: torch.optim.Optimizer,
    cfg: TrainConfig,
    sampler: Sampler,
    pairs: PairSampler | None,
    gen: torch.Generator,
    device: torch.device,
    step: int,
    hist: dict[str, list],
    world: int,
) -> tuple[torch.Tensor | None, float, float | None]:
    """One step's batch, loss and gradients (not yet applied): returns (λ̂ of the
    firm-nonexpansiveness penalty or None, the loss averaged over the ranks, the stage's γ)."""
    lr, gamma_stage = cfg.phase(step)
    gamma = gamma_stage
    for g in opt.param_groups:
        g["lr"] = lr * g.get("lr_mult", 1.0)
    clean, noisy, level = _training_batch(cfg, sampler, pairs, gen, device)
    if level is not None and gamma is not None:  # γ in proportion to each image's error
        gamma = gamma * level / cfg.sigma
    if takes_noise_level(model):  # told each image's σ (or its artifact's RMS error)
        set_noise_level(model, level if level is not None else cfg.sigma)
    # DDP's forward is model.forward = model.prox with create_graph in training mode
    pred = net(noisy) if net is not None else model.prox(noisy, create_graph=True)
    if gamma is None:
        loss = (pred - clean).abs().mean()
    elif cfg.loss == "mse":
        loss = (pred - clean).pow(2).mean()
    elif cfg.loss == "mse-relative":
        lev = level if level is not None else torch.full((pred.shape[0],), cfg.sigma)
        err = (pred - clean).pow(2).flatten(1).mean(1)
        loss = (err / lev.to(err).pow(2)).mean()
    else:
        loss = proximal_matching_loss(pred, clean, gamma)
    lam_hat = None
    if cfg.fne_weight > 0:
        penalty, lam_hat = _fne_penalty(model, clean, cfg, gen)
        hist.setdefault("fne_penalty", []).append(float(penalty.detach()))
        hist.setdefault("lam_max", []).append(float(lam_hat.max()))
        loss = loss + cfg.fne_weight_at(step) * penalty
    # the mean over the ranks before backward: every rank sees the same value, so a non-finite
    # loss stops all of them at this step
    loss_value = _mean_over_ranks(loss.detach(), world)
    opt.zero_grad(set_to_none=True)
    if math.isfinite(loss_value):
        loss.backward()  # under DDP: gradients all-reduced and averaged over the ranks here
    return lam_hat, loss_value, gamma_stage


def _clip_and_step(model: nn.Module, opt: torch.optim.Optimizer, cfg: TrainConfig) -> bool:
    """Apply the step's gradients (clip, Adam, then the convexity clamp) if they are finite;
    returns whether they were (else nothing changes)."""
    norm = nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
    if not math.isfinite(float(norm)):
        return False
    opt.step()
    model.clamp_()
    return True


KAPPA_LR_MULT = 100.0  # κ (the activations' σ-smoothing) moves O(1), the weights O(1e-2)


def _param_groups(model: nn.Module) -> list[dict[str, Any]]:
    """Adam's groups: the smoothing κ (``priors.icnn``, names ending in ``kappa.N``) at
    KAPPA_LR_MULT × the learning rate, everything else at the rate."""
    kappa, rest = [], []
    for name, p in model.named_parameters():
        (kappa if ".kappa." in name else rest).append(p)
    groups: list[dict[str, Any]] = [{"params": rest, "lr_mult": 1.0}]
    if kappa:
        groups.append({"params": kappa, "lr_mult": KAPPA_LR_MULT})
    return groups


def _phase_label(gamma: float | None, loss: str) -> str:
    if gamma is None:
        return "L1"
    return {"mse": "MSE", "mse-relative": "MSE/σ²"}.get(loss, f"γ={gamma:.2f}")


def _rank_world() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    if device.type != "cuda":
        return DistributedDataParallel(model)
    index = device.index if device.index is not None else torch.cuda.current_device()
    return DistributedDataParallel(model, device_ids=[index])


def _mean_over_ranks(value: torch.Tensor, world: int) -> float:
    """The loss averaged over the ranks (what the averaged gradient descends), for the log."""
    if world > 1:
        value = value.clone()
        dist.all_reduce(value)
        value /= world
    return float(value)


def _gather_generator_states(gen: torch.Generator, world: int) -> list[torch.Tensor]:
    """Every rank's generator state (rank order); a collective when world > 1."""
    state = gen.get_state()
    if world == 1:
        return [state]
    backend_device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    local = state.to(backend_device)
    out = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(out, local)
    return [t.cpu() for t in out]


def _restore(
    ckpt: Path,
    model: nn.Module,
    opt: torch.optim.Optimizer,
    gen: torch.Generator,
    rank: int = 0,
    world: int = 1,
):
    from priors.checkpoint import CheckpointError

    tensors, info = read_checkpoint(ckpt)
    if "step" not in info["train"]:
        raise CheckpointError(
            f"{ckpt}: cannot resume: it holds weights without a training state (exported, or "
            "written by --steps 0); start from it with --init, or pass --no-resume to overwrite"
        )
    if info["config"] != model.config():
        changes = ", ".join(config_changes(info["config"], model.config()))
        raise CheckpointError(
            f"{ckpt}: cannot resume: it holds another architecture ({changes}); pass another "
            "checkpoint, or --no-resume to start over"
        )
    load_model_state(ckpt, model, tensors)
    train = info["train"]
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, idx, name = k.split(".", 2)
            state.setdefault(int(idx), {})[name] = v
    if "param_groups" in train:
        opt.load_state_dict({"state": state, "param_groups": train["param_groups"]})
    key = "rng.generator" if rank == 0 else f"rng.generator.rank{rank}"
    saved_world = int(train.get("world_size", 1))
    if saved_world != world and rank == 0:
        import warnings

        warnings.warn(
            f"{ckpt}: written by {saved_world} training process(es), resumed with {world}: "
            "the weights and optimizer continue, but the data order differs from an "
            "uninterrupted run (resume with the same number of processes for an exact resume)",
            stacklevel=3,
        )
    if key in tensors:
        gen.set_state(tensors[key])
    return int(train.get("step", 0)), float(train.get("seconds", 0.0)), train.get("history") or {}


def save_history(hist: dict[str, list], path: str | Path) -> None:
    Path(path).write_text(json.dumps(hist))
