"""Learned proximal networks: the AE-LPN and its ablations, all as f = ∇ψ with ψ convex.

Every model here (except ``NormalizationTrick``) defines a convex potential ψ: (B, C, H, W) -> (B,)
and its prox f(v) = ∇ψ(v) by autograd. By Gribonval & Nikolova, the gradient of a convex function
is exactly the proximal operator of some regularizer R, which ``regularizer`` evaluates.

Kinds (``KINDS``), with x̄ = P₁x the per-channel mean image and P⊥x = x − x̄:

=============  ==========================================================  =====================
kind           ψ(x)                                                        equivariance of f
=============  ==========================================================  =====================
aelpn          ½||P₁x||² + Σ_p h_p(P⊥x)² + α/2·||P⊥x||²                    a·x + b (a > 0)
aelpn-global   ½||P₁x||² + N·(mean_p h_p(P⊥x))² + α/2·||P⊥x||²             a·x + b (a > 0)
scale-only     Σ_p h_p(x)² + α/2·||x||²                                    a·x (a > 0)
shift-only     ½||P₁x||² + Σ_p h_p^LPN(P⊥x) + α/2·||P⊥x||²                 x + b
lpn            Σ_p h_p^LPN(x) + α/2·||x||²                                 none
=============  ==========================================================  =====================

h is a bias-free ``ConvICNN`` (smooth homogeneous activations, see ``priors.icnn``) whose output
goes through a nonnegative one (h ≥ 0, convex, positively 1-homogeneous);
h^LPN has biases, softplus activations and no output activation (convex). Why the AE-LPN is exact:

* convexity: t ↦ t² is convex and nondecreasing on t ≥ 0 and h ≥ 0 is convex, so h² is convex; a
  sum of convex functions of the linear map P⊥x is convex; ½||P₁x||² and α/2||P⊥x||² are convex.
* homogeneity: h(a·u) = a·h(u) for a > 0 (no biases, homogeneous activations), so h² and
  ||P⊥x||² are 2-homogeneous and ∇ of a 2-homogeneous function is 1-homogeneous.
* shift: P⊥(x + b·1) = P⊥x and P₁(x + b·1) = P₁x + b·1, so f(x + b·1) = f(x) + b·1. Together:
  f(a·x + b·1) = a·f(x) + b·1 for every a > 0 and scalar b.

``local_mean_sigma=σ`` (aelpn, shift-only) replaces the image mean by a local one: with G a
Gaussian local mean (``local_mean``: symmetric, eigenvalues in [0, 1], G1 = 1) and Q = I − G,
ψ(x) = ½xᵀ(I − Q²)x + Σ_p h_p(Qx)² + α/2·||Qx||². I − Q² ⪰ 0 keeps ψ convex, Q1 = 0 and
(I − Q²)1 = 1 keep f(x + b) = f(x) + b, and with G = P₁ it is the row above. The network then
sees each pixel against its surroundings at any image size, as on its training patches.

The AE-LPN paper's SortPool activation is not used: its min branch is concave, so a network with
it is not provably input-convex; leaky ReLU (slope 0.2) is convex, nondecreasing and homogeneous.
``noise_input=True`` tells h the noise level σ as an extra input channel σ·1 (set
``model.noise_level``, in the image's units, or use ``told_noise_level``): ψ(x; σ) with h(Qx, σ·1).
For a fixed σ the channel is a constant input, so ψ(·; σ) is convex and f(·; σ) is exactly a prox;
ψ is 2-homogeneous in (x, σ) jointly and Q kills constants, so f(a·x + b; a·σ) = a·f(x; σ) + b.
At the training σ the channel acts like the LPN's biases; homogeneity carries f to other σ.

Images of any size work: the network is fully convolutional, φ sums over pixels (the pooling is
global), and sizes that are not a multiple of the network's scale factor are zero-padded (linear).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from priors.icnn import ConvICNN, DenseICNN

__all__ = [
    "KINDS",
    "LearnedProx",
    "ConvLPN",
    "NormalizationTrick",
    "DenseLPN",
    "build_model",
    "takes_noise_level",
    "set_noise_level",
    "told_noise_level",
    "estimate_noise_level",
    "unwrap",
]

KINDS = ("aelpn", "aelpn-global", "scale-only", "shift-only", "lpn", "normalization-trick")


# ConvLPN runs its network on channels-last inputs (float32/16; float64 stays as it is): about a
# quarter less time per 512² prox on CPU. ``recon bench speed`` switches it off to compare.
CHANNELS_LAST = True


def _pad_to(x: torch.Tensor, multiple: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    return F.pad(x, (0, pw, 0, ph)) if (ph or pw) else x


def tile_windows(x: torch.Tensor, tile: int, stride: int) -> tuple[torch.Tensor, float]:
    """All tile×tile windows of x (B, C, H, W) at ``stride``, as (B·n, C, t_H, t_W), and the
    weight s_H·s_W / (t_H·t_W) that makes their sum an average over windows.

    Along an axis longer than ``tile``, x is first zero-padded to a multiple of the stride,
    then extended periodically by tile − stride, so the windows wrap around and every pixel
    (padding included) lies in the same number of them: with Z the zero padding (ZᵀZ = I) and
    T_k the windows, Zᵀ(Σ_k T_kᵀT_k)Z is that number times I, so a sum of ψ over the windows
    keeps the identity part of the prox exact at every pixel. (Reflection padding would count
    the reflected pixels twice and double them in f.) An axis no longer than ``tile`` is one
    window. Every step is linear in x."""
    if not 0 < stride <= tile:
        raise ValueError(f"need 0 < stride <= tile, got stride {stride}, tile {tile}")
    sizes = []
    for dim in (2, 3):
        n = x.shape[dim]
        if n <= tile:
            sizes.append((n, n))
            continue
        pad = (-n) % stride
        if pad:
            widths = (0, 0, 0, pad) if dim == 2 else (0, pad, 0, 0)
            x = F.pad(x, widths)
        x = torch.cat([x, x.narrow(dim, 0, tile - stride)], dim)
        sizes.append((tile, stride))
    (th, sh), (tw, sw) = sizes
    w = x.unfold(2, th, sh).unfold(3, tw, sw)  # (B, C, nH, nW, th, tw)
    windows = w.permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1], th, tw)
    return windows, (sh * sw) / (th * tw)


def _symmetric_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """B x: a separable Gaussian blur (std ``sigma`` pixels, radius ⌈3σ⌉) of x (B, C, H, W) with
    half-sample symmetric extension (x₋₁ = x₀, ...). With that extension the blur is diagonal
    in the DCT-II basis, so B is a symmetric matrix, B 1 = 1, and its eigenvalues are the
    kernel's cosine response, within [−1, 1]."""
    r = max(int(3.0 * sigma + 0.5), 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    for dim in (2, 3):
        n = x.shape[dim]
        i = torch.arange(-r, n + r, device=x.device) % (2 * n)
        i = torch.where(i < n, i, 2 * n - 1 - i)  # mirror about the half-sample points
        x = x.index_select(dim, i)
        shape = (1, 1, -1, 1) if dim == 2 else (1, 1, 1, -1)
        x = F.conv2d(x, k.view(*shape).expand(c, -1, -1, -1), groups=c)
    return x


def local_mean(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """G x = B(B x), B the symmetric Gaussian blur of std σ/√2 (``_symmetric_blur``): a local
    mean of x (B, C, H, W) over about σ pixels, at any size.

    G is symmetric with eigenvalues b² in [0, 1] and G 1 = 1, so Q = I − G is symmetric, has
    eigenvalues in [0, 1] and Q 1 = 0: what ``ConvLPN(local_mean_sigma=σ)`` needs."""
    s = sigma / 2**0.5
    return _symmetric_blur(_symmetric_blur(x, s), s)


def noise_levels(level: float | torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """The told noise level ``level`` (one σ, or one per image) as a (B,) tensor like x
    (B, ...): refused when not set, negative, not finite, or of the wrong length."""
    if level is None:
        raise ValueError(
            "this prior is told the noise level: set model.noise_level (in the image's units; "
            "`recon ct/mri` set it from --prior-sigma-noise / --prior-sigma-rel) or use "
            "told_noise_level(model, σ)"
        )
    s = torch.as_tensor(level, dtype=x.dtype, device=x.device)
    if bool((s < 0).any()) or not bool(torch.isfinite(s).all()):
        raise ValueError(f"noise_level must be finite and >= 0, got {level}")
    if s.ndim == 0:
        return s.expand(x.shape[0])
    if s.shape != (x.shape[0],):
        raise ValueError(f"noise_level: one σ or one per image ({x.shape[0]}), got {s.shape}")
    return s


def mean_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(P₁x, P⊥x): per-image, per-channel mean over all but the batch/channel axes."""
    dims = tuple(range(2, x.ndim))
    m = x.mean(dim=dims, keepdim=True) if dims else torch.zeros_like(x)
    return m, x - m


class LearnedProx(nn.Module):
    """Base: prox f(v) = ∇ψ(v) by autograd; ``regularizer`` evaluates R by inverting f."""

    kind: str = ""
    equivariance: str = "none"

    def potential(self, x: torch.Tensor) -> torch.Tensor:  # (B,)
        raise NotImplementedError

    def prox(self, v: torch.Tensor, create_graph: bool | None = None) -> torch.Tensor:
        """f(v) = ∇ψ(v), v: (B, C, H, W) (or (B, D) for dense models); same shape out.

        Builds a graph for a second backward (training) when ``create_graph`` is True; by default
        only when the module is in training mode and grad mode is on.
        """
        self.check_input(v)
        if create_graph is None:
            create_graph = self.training and torch.is_grad_enabled()
        return self._gradient(v, create_graph)[0]

    def check_input(self, v: torch.Tensor) -> None:
        """ValueError, saying what to do, unless ``v`` is a real tensor with the model's channels
        (a complex MRI image goes through ``priors.base.ComplexAsChannels``)."""
        name = type(self).__name__
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"{name}.prox: expected a torch tensor, got {type(v).__name__}")
        c = self._config.get("in_channels")
        if v.is_complex():
            raise ValueError(
                f"{name}.prox: a real prior ({c} channel(s)) given a complex image ({v.dtype}); "
                "complex MRI images go through priors.base.ComplexAsChannels(prior) with a "
                "2-channel prior (e.g. ridge-mri)"
            )
        if v.ndim == 4 and c is not None and v.shape[1] != c:
            raise ValueError(
                f"{name}.prox: this prior takes (B, {c}, H, W) images, got shape {tuple(v.shape)}"
            )

    def _gradient(self, v: torch.Tensor, create_graph: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """(∇ψ(v), ψ(v) (B,)), both detached unless ``create_graph``."""
        with torch.enable_grad():
            x = v if (create_graph and v.requires_grad) else v.detach().requires_grad_(True)
            psi = self.potential(x)
            (g,) = torch.autograd.grad(psi.sum(), x, create_graph=create_graph)
        return (g, psi) if create_graph else (g.detach(), psi.detach())

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.prox(v)

    def prox_and_regularizer(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f(v), R(f(v)) (B,)) with no inversion: at x = f(v) = ∇ψ(v) the Fenchel–Young
        equality ψ(v) + ψ*(x) = ⟨v, x⟩ gives R(x) = ψ*(x) − ½||x||² = ⟨v, x⟩ − ½||x||² − ψ(v),
        the same R (and constant) as ``regularizer``. Costs one prox."""
        self.check_input(v)
        g, psi = self._gradient(v, create_graph=False)
        v = v.detach()
        r = (v * g).flatten(1).sum(1) - 0.5 * g.pow(2).flatten(1).sum(1) - psi
        return g, r

    def regularizer(self, x: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        """R(x) (B,) up to an additive constant (see ``priors.regularizer``).

        The inversion is warm-started from the previous call's preimage when shapes match, which
        makes monitoring R along a solver's iterates cheap."""
        from priors.regularizer import evaluate_regularizer

        warm = getattr(self, "_last_preimage", None)
        if "u0" not in kwargs and warm is not None and warm.shape == x.shape:
            kwargs["u0"] = warm.to(x)
        r = evaluate_regularizer(self, x, **kwargs)
        self._last_preimage = r.u
        return r.value

    @torch.no_grad()
    def clamp_(self) -> None:
        """Restore input-convexity after an optimizer step (nonnegative z-path weights)."""
        for m in self.modules():
            if m is not self and hasattr(m, "clamp_"):
                m.clamp_()

    def config(self) -> dict[str, Any]:
        return dict(self._config)


class ConvLPN(LearnedProx):
    """Convolutional LPN of any kind in ``KINDS`` except the normalization trick."""

    def __init__(
        self,
        kind: str = "aelpn",
        in_channels: int = 1,
        width: int = 32,
        levels: int = 3,
        depth: int = 2,
        kernel: int = 3,
        alpha: float = 1e-3,
        act: str = "smooth",
        out_channels: int = 1,
        upsample: str = "nearest",
        global_pool: bool = False,
        downsample: str = "avg",
        z_downsample: str = "stride",
        padding: str = "zeros",
        tile: int | None = None,
        tile_stride: int | None = None,
        local_mean_sigma: float | None = None,
        noise_input: bool = False,
        sigma_smoothing: bool = False,
    ) -> None:
        super().__init__()
        if kind not in KINDS or kind == "normalization-trick":
            raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS[:-1]}")
        self.kind = kind
        self._config = dict(
            kind=kind,
            in_channels=in_channels,
            width=width,
            levels=levels,
            depth=depth,
            kernel=kernel,
            alpha=alpha,
            act=act,
            out_channels=out_channels,
            upsample=upsample,
        )
        if global_pool:  # recorded only when used, so older checkpoints keep their config
            self._config["global_pool"] = True
        if downsample != "avg":  # likewise
            self._config["downsample"] = downsample
        if z_downsample != "stride":
            self._config["z_downsample"] = z_downsample
        if padding != "zeros":
            self._config["padding"] = padding
        self.tile, self.tile_stride = tile, tile_stride
        if tile is not None:
            if kind not in ("aelpn", "aelpn-global", "shift-only"):
                raise ValueError(
                    f"tile splits off local means: only for models with a mean "
                    f"split (aelpn, aelpn-global, shift-only), not {kind!r}"
                )
            self.tile_stride = tile_stride or max(tile // 3, 1)
            if not 0 < self.tile_stride <= tile:
                raise ValueError(f"need 0 < tile_stride <= tile, got {self.tile_stride}, {tile}")
            self._config.update(tile=tile, tile_stride=self.tile_stride)
        self.local_mean_sigma = local_mean_sigma
        if local_mean_sigma is not None:
            if kind not in ("aelpn", "shift-only"):
                raise ValueError(
                    f"local_mean_sigma replaces the mean split: only for aelpn and shift-only, "
                    f"not {kind!r}"
                )
            if tile is not None:
                raise ValueError("use either tile or local_mean_sigma, not both")
            if not local_mean_sigma > 0:
                raise ValueError(f"local_mean_sigma must be > 0, got {local_mean_sigma}")
            self._config["local_mean_sigma"] = float(local_mean_sigma)
        self.noise_input = noise_input
        self.noise_level: float | torch.Tensor | None = None  # σ (image units), or (B,)
        if noise_input:
            if tile is not None:
                raise ValueError("noise_input does not work with tile (use local_mean_sigma)")
            self._config["noise_input"] = True
        if sigma_smoothing:
            if not noise_input or act != "smooth":
                raise ValueError(
                    "sigma_smoothing smooths at the told noise level: it needs noise_input and "
                    "the smooth activation"
                )
            self._config["sigma_smoothing"] = True
        self.alpha = alpha
        self.homogeneous = kind in ("aelpn", "aelpn-global", "scale-only")
        self.mean_split = kind in ("aelpn", "aelpn-global", "shift-only")
        self.equivariance = {
            "aelpn": "affine",
            "aelpn-global": "affine",
            "scale-only": "scale",
            "shift-only": "shift",
            "lpn": "none",
        }[kind]
        if self.homogeneous:
            if act not in ("smooth", "leaky_relu", "relu"):
                raise ValueError(f"{kind} needs a homogeneous activation, not {act!r}")
            # bias-free, homogeneous activations, h ≥ 0 at the output (it is squared)
            net_act, bias, out_act = act, False, "smooth_pos" if act == "smooth" else "relu"
        else:  # the plain LPN of Fang et al.: biases, softplus, no output activation
            net_act, bias, out_act = "softplus", True, None
        self.net = ConvICNN(
            in_channels + int(noise_input),  # + the σ·1 channel
            width,
            levels,
            depth,
            kernel,
            net_act,
            bias,
            out_act,
            out_channels,
            upsample,
            global_pool,
            downsample,
            z_downsample,
            padding,
            sigma_smoothing,
        )

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        if self.tile and max(x.shape[-2:]) > self.tile:  # (tile implies a mean split)
            return self._tiled_potential(x)
        return self._potential(x)

    def _tiled_potential(self, x: torch.Tensor) -> torch.Tensor:
        """ψ_T(x) = ½||P₁x||² + (s²/t²)·Σ_k ψ(T_k P⊥x): ψ on every t×t window, local mean split.

        T_k is the k-th t×t window at stride s of P⊥x, zero-padded to a multiple of s (zero is
        the global mean here) and then extended periodically (see ``tile_windows``). ψ splits
        each window into its own mean and the rest, so the network sees deviations from the
        *local* mean, as it did when trained on t×t patches, not from the mean of a much larger
        image. Exactness: a sum of convex functions of linear maps of x is convex; each term is
        2-homogeneous in P⊥x, which P⊥(x + b·1) = P⊥x leaves unchanged, and ½||P₁x||² carries
        the mean, so f(a·x + b) = a·f(x) + b for a > 0 exactly. When H and W are multiples of
        s, every pixel lies in (t/s)² windows and ψ_T is exactly the average of ψ over all
        windows."""
        b = x.shape[0]
        m, u = mean_split(x)
        windows, weight = tile_windows(u, self.tile, self.tile_stride)
        psi = self._potential(windows).view(b, -1).sum(1) * weight
        return psi + 0.5 * x.shape[-1] * x.shape[-2] * m.pow(2).flatten(1).sum(1)

    def _net_input(self, u: torch.Tensor) -> torch.Tensor:
        """What the network h sees of the split image u (B, C, H, W): u itself, or with
        ``noise_input`` [u, σ·1] (B, C + 1, H, W)."""
        if not self.noise_input:
            if self.noise_level is not None:
                raise ValueError(
                    f"noise_level {self.noise_level}: this prior has no noise-level input (one "
                    "fixed strength, trained at one σ), so it would ignore it; set noise_level "
                    "to None and set the strength through the solver (ρ of PnP-ADMM, the step "
                    "of PnP-PGD)"
                )
            return u
        s = noise_levels(self.noise_level, u)
        return torch.cat([u, s.view(-1, 1, 1, 1).expand(-1, 1, *u.shape[2:])], 1)

    def _potential(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean_split:
            m, u = mean_split(x)
            n_pix = x.shape[-1] * x.shape[-2]
            psi = 0.5 * n_pix * m.pow(2).flatten(1).sum(1)
        else:
            u, psi = x, 0.0
        if self.local_mean_sigma is not None:
            # Q = I − G: ψ = ½xᵀ(I − Q²)x + φ(Qx), with ½xᵀ(I − Q²)x = ½||P₁x||² + ½||P⊥x||² −
            # ½||Qx||² (Q kills the mean). The blur works on P⊥x: in float32 a large offset
            # (HU) would cost precision.
            c, u = u, u - local_mean(u, self.local_mean_sigma)
            psi = psi + 0.5 * (c.pow(2) - u.pow(2)).flatten(1).sum(1)
        inp = _pad_to(self._net_input(u), self.net.multiple)
        if CHANNELS_LAST and inp.dtype != torch.float64:
            # channels-last convolutions: about a quarter less time per 512² prox on CPU
            # (``recon bench speed``); the gradient comes back in the caller's layout
            inp = inp.contiguous(memory_format=torch.channels_last)
        h = self.net(inp).flatten(1)
        if self.kind == "aelpn-global":
            phi = h.shape[1] * h.mean(1).pow(2)
        elif self.homogeneous:
            phi = h.pow(2).sum(1)
        else:
            phi = h.sum(1)
        return psi + phi + 0.5 * self.alpha * u.pow(2).flatten(1).sum(1)


class DenseLPN(LearnedProx):
    """Dense (vector) LPN for x (B, D): kinds 'scale-only' (ψ = h² + α/2 x², 1-D-meaningful),
    'aelpn' (mean split over the D entries, D ≥ 2) and 'lpn'."""

    def __init__(
        self,
        kind: str = "scale-only",
        dim: int = 1,
        width: int = 64,
        depth: int = 3,
        alpha: float = 1e-3,
        act: str = "smooth",
    ):
        super().__init__()
        if kind not in ("aelpn", "scale-only", "lpn"):
            raise ValueError(f"dense kind must be aelpn, scale-only or lpn, got {kind!r}")
        if kind == "aelpn" and dim < 2:
            raise ValueError("an affine-equivariant prox in 1-D is the identity: use dim ≥ 2")
        self.kind, self.alpha = kind, alpha
        self._config = dict(kind=kind, dim=dim, width=width, depth=depth, alpha=alpha, act=act)
        self.equivariance = {"aelpn": "affine", "scale-only": "scale", "lpn": "none"}[kind]
        if kind == "lpn":
            self.net = DenseICNN(dim, width, depth, "softplus", True, None)
        else:
            self.net = DenseICNN(
                dim, width, depth, act, False, "smooth_pos" if act == "smooth" else "relu"
            )

    def potential(self, x: torch.Tensor) -> torch.Tensor:
        psi = 0.0
        u = x
        if self.kind == "aelpn":
            m = x.mean(1, keepdim=True)
            u = x - m
            psi = 0.5 * x.shape[1] * m.pow(2).squeeze(1)
        h = self.net(u).squeeze(1)
        phi = h if self.kind == "lpn" else h.pow(2)
        return psi + phi + 0.5 * self.alpha * u.pow(2).sum(1)


class NormalizationTrick(nn.Module):
    """f(x) = s·g((x − m)/s) + m with m, s the per-image mean and std and g an LPN prox.

    Affine-equivariant by construction, but **not a proximal operator**: x ↦ (x − m)/s is not
    linear, so f is not the gradient of a convex function (its Jacobian is not symmetric), and no
    regularizer R exists to monitor. It is an ablation, not a prior with guarantees.
    """

    kind = "normalization-trick"
    equivariance = "affine (not a prox)"

    def __init__(self, inner: ConvLPN | None = None, eps: float = 1e-12, **kwargs: Any) -> None:
        super().__init__()
        self.inner = inner if inner is not None else ConvLPN(kind="lpn", **kwargs)
        self.eps = eps
        self._config = dict(self.inner.config(), kind="normalization-trick")

    def prox(self, v: torch.Tensor, create_graph: bool | None = None) -> torch.Tensor:
        m, u = mean_split(v)
        s = u.pow(2).mean(dim=tuple(range(1, v.ndim)), keepdim=True).sqrt().clamp_min(self.eps)
        return s * self.inner.prox(u / s, create_graph=create_graph) + m

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return self.prox(v)

    def clamp_(self) -> None:
        self.inner.clamp_()

    def config(self) -> dict[str, Any]:
        return dict(self._config)


def unwrap(prior: Any) -> Any:
    """The model inside wrappers (``ComplexAsChannels``, ``GroupAveragedPrior``: ``.prior``)."""
    while not isinstance(prior, LearnedProx) and hasattr(prior, "prior"):
        prior = prior.prior
    return prior


def takes_noise_level(prior: Any) -> bool:
    """True if ``prior`` (or the model it wraps) is a ``noise_input`` model."""
    return bool(getattr(unwrap(prior), "noise_input", False))


def set_noise_level(prior: Any, sigma: float | torch.Tensor | None) -> None:
    """Tell a ``noise_input`` prior (possibly wrapped) the noise level σ in image units."""
    model = unwrap(prior)
    if not getattr(model, "noise_input", False):
        raise ValueError(f"{type(model).__name__} does not take a noise level")
    model.noise_level = sigma


@contextmanager
def told_noise_level(prior: Any, sigma: float | torch.Tensor) -> Iterator[Any]:
    """``with told_noise_level(m, σ): m.prox(v)``; a no-op for priors without a σ input."""
    if not takes_noise_level(prior):
        yield prior
        return
    model = unwrap(prior)
    before = model.noise_level
    model.noise_level = sigma
    try:
        yield prior
    finally:
        model.noise_level = before


def estimate_noise_level(x: torch.Tensor) -> torch.Tensor:
    """Blind σ̂ per image (B,) of x (B, C, H, W): median|d| / 0.6745 over the finest diagonal
    Haar details d = (x₀₀ − x₀₁ − x₁₀ + x₁₁)/2 of every 2×2 block (Donoho's MAD rule; for white
    noise of std σ, d has std σ). Constants cancel in d, so σ̂(a·x + b) = |a|·σ̂(x) exactly:
    a ``noise_input`` prior told σ̂(v) stays affine-equivariant, but v -> f(v; σ̂(v)) is no
    longer a prox (σ̂ depends on v); in PnP σ is fixed per run instead."""
    h, w = (x.shape[-2] // 2) * 2, (x.shape[-1] // 2) * 2
    if h == 0 or w == 0:
        raise ValueError(f"need images of at least 2x2 pixels, got {tuple(x.shape[-2:])}")
    x = x[..., :h, :w]
    d = (x[..., 0::2, 0::2] - x[..., 0::2, 1::2] - x[..., 1::2, 0::2] + x[..., 1::2, 1::2]) / 2
    return d.abs().flatten(1).median(1).values / 0.6745


def build_model(config: dict[str, Any]) -> nn.Module:
    """Instantiate a model from its ``config()`` dict (as stored in checkpoints)."""
    from priors.ridge import KIND as RIDGE_KIND

    cfg = dict(config)
    kind = cfg.pop("kind")
    if "dim" in cfg:
        return DenseLPN(kind=kind, **cfg)
    known = (*KINDS, RIDGE_KIND)  # every kind this function builds
    if kind not in known:
        raise ValueError(f"unknown kind {kind!r}; expected one of: {', '.join(known)}")
    if kind == "normalization-trick":
        return NormalizationTrick(**cfg)
    if kind == RIDGE_KIND:
        from priors.ridge import RidgeProx

        return RidgeProx(**cfg)
    return ConvLPN(kind=kind, **cfg)
