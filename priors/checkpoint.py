"""Checkpoints in safetensors (no code runs on load) and the registry of shipped priors.

A checkpoint file holds the model weights as tensors (keys ``model.*``), optionally the optimizer
state and RNG state for exact resume (``optim.*``, ``rng.*``), and string metadata:

    format   "pnp-recon-prior/1"
    config   JSON of the architecture (``model.config()``): kind, channels, width, ...
    meta     JSON: equivariance, sigma, training data, steps, seed, package version, ...
    train    JSON of the training state needed to resume (step, optimizer param groups)

``load_prior("aelpn-ct")`` looks the name up in ``priors/weights/``; any other argument is a path.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from priors.lpn import build_model

__all__ = [
    "FORMAT",
    "CheckpointError",
    "save_checkpoint",
    "read_checkpoint",
    "load_prior",
    "rebuild",
    "shipped_priors",
    "WEIGHTS_DIR",
]

FORMAT = "pnp-recon-prior/1"
WEIGHTS_DIR = Path(__file__).parent / "weights"


class CheckpointError(ValueError):
    """A checkpoint that is missing, corrupt, or does not fit the requested architecture."""


def _atomic_save(tensors: dict[str, torch.Tensor], metadata: dict[str, str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=metadata)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def package_version() -> str:
    try:
        return importlib.metadata.version("pnp-recon")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    meta: dict[str, Any] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    train_state: dict[str, Any] | None = None,
    rng: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write model weights + metadata (and optionally what exact resume needs), atomically."""
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    train = dict(train_state or {})
    if optimizer is not None:
        sd = optimizer.state_dict()
        for idx, st in sd["state"].items():
            for name, val in st.items():
                t = val if torch.is_tensor(val) else torch.tensor(val)
                tensors[f"optim.{idx}.{name}"] = t.detach().contiguous().cpu()
        train["param_groups"] = sd["param_groups"]
    for k, v in (rng or {}).items():
        tensors[f"rng.{k}"] = v.contiguous().cpu()
    meta = {"package_version": package_version(), **(meta or {})}
    metadata = {
        "format": FORMAT,
        "config": json.dumps(model.config()),
        "meta": json.dumps(meta),
        "train": json.dumps(train),
    }
    _atomic_save(tensors, metadata, Path(path))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and decoded metadata; a clear error naming the file if it is not a checkpoint."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: a directory, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        tensors = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        hint = ""
        if path.suffix.lower() in (".pt", ".pth", ".ckpt", ".bin", ".pkl"):
            hint = (
                "; only .safetensors checkpoints (recon train, priors.checkpoint.save_checkpoint) "
                "are read: pickled PyTorch files are never loaded, since loading one can run code"
            )
        raise CheckpointError(
            f"{path}: not a readable safetensors checkpoint ({exc}){hint}"
        ) from None
    if raw.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a pnp-recon prior checkpoint (format {raw.get('format')!r}, "
            f"expected {FORMAT!r})"
        )
    try:
        info = {k: json.loads(raw[k]) for k in ("config", "meta", "train")}
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt checkpoint metadata ({exc})") from None
    return tensors, info


def load_model_state(path: str | Path, model: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load ``model.*`` tensors into ``model``; a clear error naming both on a mismatch."""
    state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or extra or wrong:
        cfg = model.config() if hasattr(model, "config") else type(model).__name__
        detail = "; ".join(
            s
            for s in (
                f"missing {missing[:3]}" if missing else "",
                f"unexpected {extra[:3]}" if extra else "",
                f"shape mismatch {wrong[:3]}" if wrong else "",
            )
            if s
        )
        raise CheckpointError(f"{path}: weights do not fit architecture {cfg}: {detail}")
    for k, v in state.items():
        bad = int((~torch.isfinite(v)).sum()) if v.is_floating_point() else 0
        if bad:
            raise CheckpointError(
                f"{path}: {bad} NaN or infinite value(s) in weight {k!r}; such a prior gives no "
                "usable image (retrain, or use an earlier checkpoint)"
            )
    model.load_state_dict(state)


def shipped_priors() -> dict[str, Path]:
    """Names of the priors shipped with the package -> their files."""
    return {p.stem: p for p in sorted(WEIGHTS_DIR.glob("*.safetensors"))}


def load_prior(
    name_or_path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> nn.Module:
    """A ready-to-use prior (eval mode) from a shipped name (``aelpn-ct``) or a checkpoint path.

    Also accepts ``tv`` / ``tv:WEIGHT`` for the classical TV prior.

    Strength: a prior that takes the noise level (``priors.lpn.takes_noise_level``) must be told
    σ in the image's units before ``prox`` (``prior.noise_level = σ`` or ``with
    priors.lpn.told_noise_level(prior, σ)``). With the low-level solvers you also choose ρ (or
    the step). The presets' rules are a good start: σ ≈ 0.5 × the blind noise estimate of the
    start image (``priors.lpn.estimate_noise_level``; ``aelpn-ct``: max(1.3 ×, 0.07 × its
    range)), ρ = rho_rel·λ·||A||² with rho_rel about 0.01 (CT); ``recon/presets/*.json`` hold
    them all and ``recon.api.solve`` applies them for you.
    """
    name = str(name_or_path)
    if name == "tv" or name.startswith("tv:"):
        from priors.classical import TVPrior

        return TVPrior(weight=float(name.split(":", 1)[1]) if ":" in name else 0.05)
    shipped = shipped_priors()
    if name in shipped:
        path = shipped[name]
    else:
        path = Path(name)
        if not path.exists():
            known = ", ".join(list(shipped) + ["tv"]) or "none"
            raise CheckpointError(f"unknown prior {name!r}: not a file, and not one of: {known}")
    tensors, info = read_checkpoint(path)
    try:
        model = build_model(info["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: unknown architecture {info['config']} ({exc})") from None
    load_model_state(path, model, tensors)
    model.meta = info["meta"]
    model.source = str(path)
    return model.to(device=device, dtype=dtype).eval()


def rebuild(model: nn.Module, **changes: Any) -> nn.Module:
    """The same weights in a changed architecture: ``model.config()`` updated by ``changes``.

    For options that add no weights or only zero-started ones (``tile``, ``local_mean_sigma``,
    ``downsample``, ``upsample``, ``padding``, ``global_pool``, ``sigma_smoothing``, ...).
    Weights the new architecture adds (the global feature's U⁺, the smoothing κ) start at zero,
    so the rebuilt prior computes what ``model`` computed wherever the change itself does not
    alter ψ. A change the weights do not fit is a ``CheckpointError``. Keeps ``meta``,
    ``source``, device, dtype (the weights are copied at it, not through float32) and
    train/eval mode."""
    cfg = {**model.config(), **changes}
    try:
        new = build_model(cfg)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot rebuild {model.config()} as {cfg}: {exc}") from None
    p = next(model.parameters())
    new = new.to(device=p.device, dtype=p.dtype)  # before loading: no round trip via float32
    try:
        missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    except RuntimeError as exc:  # weights of other shapes
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(f"cannot rebuild {model.config()} as {cfg}: {first}") from None
    if unexpected or any(".glob." not in k and ".kappa." not in k for k in missing):
        raise CheckpointError(
            f"cannot rebuild {model.config()} as {cfg}: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    with torch.no_grad():
        for k in missing:
            new.get_parameter(k).zero_()
    for attr in ("meta", "source"):
        if hasattr(model, attr):
            setattr(new, attr, getattr(model, attr))
    return new.train(model.training)


def save_rebuilt(prior: str | Path, out: str | Path, **changes: Any) -> str:
    """Write ``prior`` (shipped name or checkpoint) rebuilt with ``changes`` (``rebuild``: the
    same weights) to ``out``, its meta noting the source and the changes; returns the path."""
    model = rebuild(load_prior(prior), **changes)
    meta = {**getattr(model, "meta", {}), "changed_from": str(prior), "changes": changes}
    save_checkpoint(out, model, meta)
    return str(out)
