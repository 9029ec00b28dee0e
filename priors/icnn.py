"""Input-convex networks (ICNNs) used as potentials ψ of learned proximal networks.

A multi-scale convolutional ICNN ``ConvICNN`` maps x (B, C, H, W) to a per-pixel map
h(x) (B, 1, H, W), each entry a convex function of x. Why it is convex, layer by layer:

* a "z-path" layer computes  z' = σ(W⁺ z + V x_s):  W⁺ ≥ 0 (clamped after each optimizer step, see
  ``clamp_``) is a nonnegative combination of convex functions (convex), V x_s is linear in x
  (x_s = average-pooled x, itself linear), and σ convex and nondecreasing keeps it convex;
* strided convolutions, average pooling, nearest or bilinear upsampling and concatenation are linear
  maps with nonnegative coefficients on the z-path, so they keep convexity too;
* the first layer sees only x (linear), which is convex.

When ``bias=False`` and σ is positively 1-homogeneous (ReLU, leaky ReLU with slope in [0, 1)),
every layer is positively 1-homogeneous: h(a·x) = a·h(x) for a > 0. Any bias (in a layer or a skip)
would break that, so the scale-equivariant models use ``bias=False``; the plain LPN uses biases
and softplus, as Fang et al. (2024).

Convolutions use zero padding, a linear map, so it keeps both properties. Sizes: H and W
divisible by 2**(levels-1) work directly; other sizes are zero-padded by the caller (see
``priors.lpn``), which is linear too.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConvICNN", "DenseICNN", "nonneg_parameters"]


class SmoothHomogeneous(nn.Module):
    """s(a, l) = leak·a + (1 − leak)·½(a + √(a² + l²)): a smooth, homogeneous ReLU.

    l is a bias-free linear map of the input x (one per layer). s is jointly convex in (a, l)
    (a linear term plus a Euclidean norm), nondecreasing in a (∂s/∂a = leak + (1 − leak)·½(1 +
    a/√(a² + l²)) ≥ 0) and positively 1-homogeneous in (a, l). With a convex in x and l linear in
    x, s(a(x), l(x)) is convex and 1-homogeneous, and, unlike ReLU, smooth wherever l ≠ 0, so ψ
    has a continuous gradient: f is continuous and the inversion behind R converges.
    """

    def __init__(self, leak: float = 0.2) -> None:
        super().__init__()
        self.leak = leak

    def forward(
        self, a: torch.Tensor, l: torch.Tensor, floor: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``floor`` (≥ 0, constant in x): s = leak·a + (1 − leak)·½(a + √(a² + l² + floor)),
        the norm of (a, l, √floor): still convex and nondecreasing in a; with floor = κ·σ²
        (σ the told noise level) 1-homogeneous in (a, l, σ) jointly, and its curvature is
        bounded by about 1/(√κ·σ) instead of growing without bound where a and l both vanish."""
        return _SmoothFunction.apply(a, l, floor, self.leak)


class _SmoothFunction(torch.autograd.Function):
    """s(a, l, floor) of ``SmoothHomogeneous`` in a few fused passes, with its gradient.

    s = (leak + c)·a + c·r, r = √max(a² + l² + floor, tiny), c = (1 − leak)/2, so
    ∂s/∂a = leak + c + c·a/r, ∂s/∂l = c·l/r, ∂s/∂floor = c/(2r). The clamp at the smallest
    normal number only acts at a = l = floor = 0 (where s = 0): it avoids 0/0 and keeps
    homogeneity. The same function as the plain expression, with about half the passes over
    memory a 512² prox spends in its activations and their derivatives. A second derivative
    (training builds one) recomputes r from the saved inputs with differentiable operations,
    so double backward is exact too."""

    @staticmethod
    def forward(ctx, a, l, floor, leak):  # noqa: E741 (the l of s(a, l))
        sq = a * a
        sq.addcmul_(l, l)
        if floor is not None:
            sq = sq.add_(floor) if floor.shape == sq.shape else sq + floor
        r = sq.clamp_min_(torch.finfo(a.dtype).tiny).sqrt_()
        c = 0.5 * (1.0 - leak)
        ctx.save_for_backward(a, l, floor, r)
        ctx.leak = leak
        return torch.add(r, a, alpha=(leak + c) / c).mul_(c)  # c > 0: leak < 1

    @staticmethod
    def backward(ctx, g):
        a, l, floor, r = ctx.saved_tensors
        leak = ctx.leak
        c = 0.5 * (1.0 - leak)
        tiny = torch.finfo(a.dtype).tiny
        if torch.is_grad_enabled():  # double backward: r as a differentiable function
            sq = a * a + l * l
            if floor is not None:
                sq = sq + floor
            r = torch.sqrt(sq.clamp_min(tiny))
        t = g * c / r  # g·∂r/∂(a²)·2c, the shared factor
        ga = g * (leak + c) + t * a
        gl = t * l if ctx.needs_input_grad[1] else None
        gf = None
        if ctx.needs_input_grad[2]:  # zero where the clamp acted (r² at the floor of tiny)
            free = (r * r > tiny).to(g.dtype)
            gf = (0.5 * t * free).sum_to_size(floor.shape)
        return ga, gl, gf, None


def _act(name: str, bias: bool) -> nn.Module:
    if name == "smooth":
        return SmoothHomogeneous(0.2)
    if name == "smooth_pos":  # leak 0: s ≥ 0, used on the output h before squaring
        return SmoothHomogeneous(0.0)
    if name == "leaky_relu":
        return nn.LeakyReLU(0.2)
    if name == "relu":
        return nn.ReLU()
    if name == "softplus":
        if not bias:
            raise ValueError("softplus is not positively homogeneous: use it only with bias=True")
        return nn.Softplus(beta=20.0)
    raise ValueError(f"unknown activation {name!r} (leaky_relu, relu, softplus)")


def _activate(
    act: nn.Module, zpart, xpart: torch.Tensor, floor: torch.Tensor | None = None
) -> torch.Tensor:
    """σ(W⁺z + Vx); for the smooth activation the x-path carries (Vx, l) as two channel halves
    (and ``floor`` = κ·σ², when the network smooths at the noise level)."""
    if isinstance(act, SmoothHomogeneous):
        v, l = xpart.chunk(2, dim=1)
        return act(zpart + v, l, floor)
    return act(zpart + xpart)


class NonnegConv2d(nn.Conv2d):
    """A convolution whose weights are kept ≥ 0 (a z-path layer of an ICNN)."""

    nonneg = True


def nonneg_parameters(module: nn.Module) -> list[torch.Tensor]:
    """The weights that must stay nonnegative for the network to be input-convex."""
    out = []
    for m in module.modules():
        if getattr(m, "nonneg", False):
            out.append(m.weight)
    return out


def _init_nonneg(conv: nn.Conv2d | nn.Linear, gain: float = 1.0) -> None:
    """Positive init with mean ≈ gain / fan_in, so activations keep their scale through depth.

    (The LPN code's exp(N(−10, 0.1)) init is so small that a squared output has near-zero
    gradients at the start; this keeps signals O(1).)"""
    w = conv.weight
    fan_in = w[0].numel()
    with torch.no_grad():
        w.uniform_(0.0, 2.0 * gain / fan_in)


_BLUR_TAPS = (1.0, 3.0, 3.0, 1.0)  # binomial, sums to 8


def _downsample(x: torch.Tensor, mode: str) -> torch.Tensor:
    """x (B, C, H, W) -> (B, C, H/2, W/2) by 2×2 averaging or a [1, 3, 3, 1]/8 blur at stride 2.

    Both are linear in x and keep constants (the weights sum to 1)."""
    if mode == "avg":
        return F.avg_pool2d(x, 2)
    taps = torch.tensor(_BLUR_TAPS, dtype=x.dtype, device=x.device) / sum(_BLUR_TAPS)
    c = x.shape[1]
    k = (taps[:, None] * taps[None, :]).expand(c, 1, 4, 4)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, stride=2, groups=c)


class ConvICNN(nn.Module):
    """Multi-scale (U-Net shaped) convolutional ICNN: x (B, C, H, W) -> h (B, K, H, W).

    Args:
        in_channels: C (1 for CT, 2 for complex MRI as real/imag).
        width: channels at the finest scale (doubled at each coarser scale, capped at 4×).
        levels: number of scales (receptive field grows ~2× per level).
        depth: z-path convolutions per scale in the encoder.
        kernel: kernel size of the convolutions.
        act: 'leaky_relu' or 'relu' (homogeneous), or 'softplus' (needs bias=True).
        bias: biases in every x-path layer (breaks homogeneity; the plain LPN only).
        out_act: apply σ to the output as well (h = relu(...) makes h ≥ 0, needed before squaring).
        out_channels: K, the number of convex maps per pixel.
        upsample: 'nearest' or 'bilinear' for the decoder's 2× upsampling. Both are linear maps
            with nonnegative coefficients (bilinear weights are 1/16·{1, 3, 9}, borders replicate),
            so either keeps convexity and homogeneity; bilinear avoids the blocky coarse-scale
            texture nearest-neighbour copies leave in the prox.
        downsample: how x is brought to the coarser scales of the x-path: 'avg' (2×2 average
            pooling) or 'blur' (a separable [1, 3, 3, 1]/8 filter at stride 2, replicate
            padding). Both are linear maps of x, so convexity and homogeneity hold either way.
            What differs is f = ∇ψ: the gradient passes back through the adjoint of this map,
            and the adjoint of 2×2 pooling copies each coarse value over a 2×2 block (the
            4×4 blocks of a 3-level prox in flat regions), while the blur's adjoint is smooth.
        z_downsample: how the z-path halves the resolution at the start of each coarser scale:
            'stride' (a strided nonnegative convolution) or 'blur' (the convolution at stride 1,
            then the [1, 3, 3, 1]/8 blur at stride 2: nonnegative and linear, so convexity and
            homogeneity hold). The adjoint of a strided convolution, which f = ∇ψ passes
            through, scatters each coarse value on a stride-2 grid (checkerboard); the blur's
            adjoint spreads it smoothly.
        sigma_smoothing: the last input channel is the told noise level σ·1 (``ConvLPN``'s
            ``noise_input``), and every smooth activation adds κ·σ² under its square root
            (``SmoothHomogeneous``), κ ≥ 0 one per channel and layer (``kappa``). For a fixed σ
            this is a constant, so convexity holds; jointly in (x, σ) every layer stays
            1-homogeneous. It bounds the activations' curvature at the scale of the noise, which
            is what a firmly nonexpansive prox needs (``priors.jacobian``): without it the
            kinks of a(x) = l(x) = 0 sharpen without bound as σ → 0. κ = 0 is the plain network.
        padding: how every convolution extends its input at the border: 'zeros' or 'replicate'
            (the edge value repeated). Both are linear, and replication has nonnegative
            coefficients on the z-path, so either keeps convexity and homogeneity. With zeros, a
            border looks like a frame at the mean level (x is mean-free), which leaves seams
            where tiled windows meet; replication continues the image.
        global_pool: give every decoder layer and the output a global feature: the mean over
            the image of the coarsest-scale features, G = mean_p z_p, added as U⁺G (U⁺ ≥ 0,
            1×1) to the z-path. G is a nonnegative average of convex, 1-homogeneous features,
            so convexity and homogeneity are kept. With the smooth activation s(a, l), a
            pre-activation a = W⁺z + U⁺G and a local linear response l give features like
            max(|l|, a): a response counts only above a level set by local *and* whole-image
            energy, the way the normalization trick divides by the image's global std.
    """

    def __init__(
        self,
        in_channels: int = 1,
        width: int = 32,
        levels: int = 3,
        depth: int = 2,
        kernel: int = 3,
        act: str = "leaky_relu",
        bias: bool = False,
        out_act: str | None = "relu",
        out_channels: int = 1,
        upsample: str = "nearest",
        global_pool: bool = False,
        downsample: str = "avg",
        z_downsample: str = "stride",
        padding: str = "zeros",
        sigma_smoothing: bool = False,
    ) -> None:
        super().__init__()
        if sigma_smoothing and act != "smooth":
            raise ValueError("sigma_smoothing needs the smooth activation (act='smooth')")
        if upsample not in ("nearest", "bilinear"):
            raise ValueError(f"upsample must be 'nearest' or 'bilinear', got {upsample!r}")
        if downsample not in ("avg", "blur"):
            raise ValueError(f"downsample must be 'avg' or 'blur', got {downsample!r}")
        if z_downsample not in ("stride", "blur"):
            raise ValueError(f"z_downsample must be 'stride' or 'blur', got {z_downsample!r}")
        if padding not in ("zeros", "replicate"):
            raise ValueError(f"padding must be 'zeros' or 'replicate', got {padding!r}")
        self.in_channels, self.levels, self.upsample = in_channels, levels, upsample
        self.downsample, self.z_downsample = downsample, z_downsample
        zstride = 1 if z_downsample == "blur" else 2
        pad = kernel // 2
        widths = [width * min(2**s, 4) for s in range(levels)]
        self.act = _act(act, bias)
        self.out_act = None if out_act is None else _act(out_act, bias)
        self.smooth = act == "smooth"
        if self.smooth and out_act not in (None, "smooth_pos"):
            raise ValueError("a smooth network needs out_act 'smooth_pos' or None")
        mult = 2 if self.smooth else 1  # smooth: each x-path also gives the l of s(a, l)

        def xconv(cout: int) -> nn.Conv2d:
            return nn.Conv2d(
                in_channels, mult * cout, kernel, padding=pad, bias=bias, padding_mode=padding
            )

        def zconv(cin: int, cout: int, stride: int = 1) -> NonnegConv2d:
            c = NonnegConv2d(
                cin, cout, kernel, stride=stride, padding=pad, bias=False, padding_mode=padding
            )
            _init_nonneg(c)
            return c

        # Encoder: at scale s, `depth` layers z' = σ(W⁺z + V x_s); scale change by strided W⁺.
        self.first = xconv(widths[0])
        self.enc_z = nn.ModuleList()
        self.enc_x = nn.ModuleList()
        for s in range(levels):
            zs, xs = nn.ModuleList(), nn.ModuleList()
            for i in range(depth):
                cin = widths[s - 1] if (s > 0 and i == 0) else widths[s]
                stride = zstride if (s > 0 and i == 0) else 1
                zs.append(zconv(cin, widths[s], stride))
                xs.append(xconv(widths[s]))
            self.enc_z.append(zs)
            self.enc_x.append(xs)
        # Decoder: upsample (nearest: nonnegative linear), merge with the encoder skip at the
        # same scale by nonnegative convolutions, plus an x-path term.
        self.dec_up = nn.ModuleList()
        self.dec_skip = nn.ModuleList()
        self.dec_x = nn.ModuleList()
        for s in range(levels - 2, -1, -1):
            self.dec_up.append(zconv(widths[s + 1], widths[s]))
            self.dec_skip.append(zconv(widths[s], widths[s]))
            self.dec_x.append(xconv(widths[s]))
        self.out_z = NonnegConv2d(widths[0], out_channels, 1, bias=False)
        _init_nonneg(self.out_z)
        self.global_pool = global_pool
        self.glob = nn.ModuleList()
        if global_pool:  # one 1×1 U⁺ per decoder layer, then one for the output
            for cout in [widths[s] for s in range(levels - 2, -1, -1)] + [out_channels]:
                u = NonnegConv2d(widths[-1], cout, 1, bias=False)
                _init_nonneg(u, gain=0.1)
                self.glob.append(u)
        out_mult = 2 if (self.smooth and out_act is not None) else 1
        self.out_x = nn.Conv2d(
            in_channels,
            out_mult * out_channels,
            kernel,
            padding=pad,
            bias=bias,
            padding_mode=padding,
        )
        # κ per smooth activation, in the order forward applies them (first, encoder, decoder,
        # output); 0.1 for a new network (``rebuild`` starts added ones at 0: the same prox)
        self.sigma_smoothing = sigma_smoothing
        self.kappa = nn.ParameterList()
        if sigma_smoothing:
            sizes = [widths[0]] + [widths[s] for s in range(levels) for _ in range(depth)]
            sizes += [widths[s] for s in range(levels - 2, -1, -1)]
            if out_act is not None:
                sizes.append(out_channels)
            for c in sizes:
                self.kappa.append(nn.Parameter(torch.full((1, c, 1, 1), 0.1)))

    def _floor(self, k: int, x_s: torch.Tensor) -> torch.Tensor | None:
        """κ_k·σ² for the k-th activation, σ the last channel of x_s (this scale's input)."""
        if not self.sigma_smoothing:
            return None
        sig = x_s[:, -1:]
        return self.kappa[k] * sig * sig

    @property
    def multiple(self) -> int:
        """H and W must be multiples of this (callers pad otherwise)."""
        return 2 ** (self.levels - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xs = [x]
        for _ in range(1, self.levels):
            xs.append(_downsample(xs[-1], self.downsample))
        z = _activate(self.act, 0.0, self.first(x), self._floor(0, x))
        k = 1
        skips = []
        for s in range(self.levels):
            for i, (zc, xc) in enumerate(zip(self.enc_z[s], self.enc_x[s], strict=True)):
                zz = zc(z)
                if self.z_downsample == "blur" and s > 0 and i == 0:
                    zz = _downsample(zz, "blur")
                z = _activate(self.act, zz, xc(xs[s]), self._floor(k, xs[s]))
                k += 1
            skips.append(z)
        g = z.mean(dim=(2, 3), keepdim=True) if self.global_pool else None  # (B, C_L, 1, 1)
        kf = k
        for k, s in enumerate(range(self.levels - 2, -1, -1)):
            if self.upsample == "bilinear":
                up = F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
            else:
                up = F.interpolate(z, scale_factor=2, mode="nearest")
            zsum = self.dec_up[k](up) + self.dec_skip[k](skips[s])
            if g is not None:
                zsum = zsum + self.glob[k](g)
            z = _activate(self.act, zsum, self.dec_x[k](xs[s]), self._floor(kf, xs[s]))
            kf += 1
        zout = self.out_z(z) if g is None else self.out_z(z) + self.glob[-1](g)
        if self.out_act is None:
            return zout + self.out_x(x)
        return _activate(self.out_act, zout, self.out_x(x), self._floor(kf, x))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Project the z-path weights (and κ) onto the nonnegative orthant (after each step)."""
        for w in nonneg_parameters(self):
            w.clamp_(min=0.0)
        for kappa in self.kappa:
            kappa.clamp_(min=0.0)


class DenseICNN(nn.Module):
    """Fully connected ICNN for 1-D and vector data: x (B, D) -> h (B, 1).

    z₁ = σ(V₀x), z_{k+1} = σ(W⁺_k z_k + V_k x), h = σ_out(W⁺ z + V x). Convex in x for the
    same reasons as ``ConvICNN``; positively 1-homogeneous when bias=False and σ homogeneous.
    """

    def __init__(
        self,
        dim: int = 1,
        width: int = 64,
        depth: int = 3,
        act: str = "leaky_relu",
        bias: bool = False,
        out_act: str | None = "relu",
    ) -> None:
        super().__init__()
        self.act = _act(act, bias)
        self.out_act = None if out_act is None else _act(out_act, bias)
        mult = 2 if act == "smooth" else 1
        self.first = nn.Linear(dim, mult * width, bias=bias)
        self.zs = nn.ModuleList()
        self.xs = nn.ModuleList()
        for _ in range(depth - 1):
            z = nn.Linear(width, width, bias=False)
            z.nonneg = True
            _init_nonneg(z)
            self.zs.append(z)
            self.xs.append(nn.Linear(dim, mult * width, bias=bias))
        self.out_z = nn.Linear(width, 1, bias=False)
        self.out_z.nonneg = True
        _init_nonneg(self.out_z)
        self.out_x = nn.Linear(dim, mult if out_act is not None else 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = _activate(self.act, 0.0, self.first(x))
        for zl, xl in zip(self.zs, self.xs, strict=True):
            z = _activate(self.act, zl(z), xl(x))
        if self.out_act is None:
            return self.out_z(z) + self.out_x(x)
        return _activate(self.out_act, self.out_z(z), self.out_x(x))

    @torch.no_grad()
    def clamp_(self) -> None:
        for w in nonneg_parameters(self):
            w.clamp_(min=0.0)
