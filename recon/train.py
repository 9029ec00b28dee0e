"""`recon train`: train a learned proximal prior on phantoms, natural images or your own scans.

Data sources (``--data``):
  ellipses        random-ellipse CT phantoms made on the fly (1 channel)
  ct-mix          70 % ellipse phantoms, 30 % natural-image patches (1 channel), so that real
                  anatomy's texture is not out of distribution
  ct-real         the shipped CT priors' data: 40 % ellipse phantoms, 40 % real head-CT patches
                  (the two JPEG 2000 slices pydicom ships, at full and half resolution; never
                  its CT_small test slice), 20 % natural-image patches (1 channel);
                  ``--ct-real-extra VOLUME`` adds every slice of your CT volumes in HU (NRRD,
                  NIfTI, DICOM series folder or file) to the real share, e.g. the lung CT that
                  ``scripts/fetch_lung_ct.py`` fetches
  natural         patches of scikit-image's bundled natural images (held-out: camera, moon, cat)
  mri-brain       Colin27 T1 brain slices (Debian mricron-data) with a smooth random phase, as
                  2-channel complex images: aelpn-mri and lpn-mri
  mri-natural     natural images with a smooth random phase, as 2-channel complex images
  mri-mix         60 % Colin27 T1 brain slices, 40 % random-ellipse phantoms, both with a smooth
                  random phase (2 channels): anatomy and the piecewise-constant phantoms MRI
                  methods are compared on (ridge-mri and crr-mri)
  FOLDER          a folder of your images (.npy, .png, .jpg, .tif, DICOM with or without .dcm,
                  fastMRI .h5); add ``--channels 2`` for complex MRI training (each image's
                  magnitude with a smooth random phase)
Validation PSNR is measured on held-out images (never on the bundled CT test slice). For a
FOLDER: every 5th file in sorted order (at least one) is held out and never trained on, and
validation uses 8 patches of its images; a folder of one file holds nothing out, and
validation then uses patches of the training images.

Several processes: ``torchrun --standalone --nproc-per-node N $(which recon) train ...`` (gloo on
CPU, nccl with ``--device cuda``, one GPU per process). Each rank draws its own batches (seed +
rank), gradients are averaged over the ranks (DistributedDataParallel), rank 0 writes the
checkpoint and the log; rerunning the same command resumes exactly (same N).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.natural import VAL_IMAGES, center_crops, natural_images, patch_sampler
from data.training_sets import (
    complex_sampler,
    ellipse_sampler,
    mix_samplers,
    read_image_folder,
    real_ct_slices,
)
from priors.checkpoint import CheckpointError, read_checkpoint, save_checkpoint, shipped_priors
from priors.lpn import KINDS, ConvLPN, NormalizationTrick, build_model
from priors.ridge import KIND as RIDGE_KIND
from priors.ridge import MODES as RIDGE_MODES
from priors.ridge import RidgeProx
from priors.training import (
    LOSSES,
    LR_SCHEDULES,
    SIGMA_SAMPLING,
    TrainConfig,
    TrainingInterrupted,
    noisy_psnr,
    same_schedule,
    train_prior,
)
from recon.argtypes import count
from recon.pipeline import GivenStore

__all__ = ["add_parser", "run", "make_sampler", "export_weights"]


DATA_SOURCES = (
    "ellipses",
    "ct-mix",
    "ct-real",
    "natural",
    "mri-brain",
    "mri-natural",
    "mri-mix",
)
MRI_SOURCES = ("mri-brain", "mri-natural", "mri-mix")  # 2-channel (complex) images
HOLD_OUT_EVERY = 5  # --data FOLDER: every 5th sorted file is held out for validation


def _mix(a, b, p_a: float):
    def sample(batch: int, gen: torch.Generator) -> torch.Tensor:
        n_a = int((torch.rand(batch, generator=gen) < p_a).sum())
        parts = [
            t
            for t in (a(n_a, gen) if n_a else None, b(batch - n_a, gen) if n_a < batch else None)
            if t is not None
        ]
        return torch.cat(parts)

    return sample


CT_REAL_MIX = (0.4, 0.4, 0.2)  # ct-real: shares of ellipse phantoms, real CT, natural images


def _and_half_scale(images: list[np.ndarray]) -> list[np.ndarray]:
    """``images`` followed by their half-resolution copies (anti-aliased)."""
    from skimage.transform import rescale

    return images + [rescale(im, 0.5, anti_aliasing=True).astype(np.float32) for im in images]


def ct_volume_slices(paths: list[str | Path]) -> list[np.ndarray]:
    """Every slice of the CT volumes at ``paths`` (an NRRD or NIfTI file, a DICOM series folder
    or one DICOM file, in HU) as normalized attenuation (``data.training_sets.hu_to_unit``), each
    volume's slices at full then half resolution like the pydicom head slices."""
    from data.dicom import read_dicom_file
    from data.training_sets import hu_to_unit
    from recon.ct import is_volume_file, read_ct_volume

    out: list[np.ndarray] = []
    for path in map(Path, paths):
        if path.is_dir() or is_volume_file(path):
            hu = read_ct_volume(path).hu
        else:
            hu = read_dicom_file(path).hu[None]
        out += _and_half_scale([hu_to_unit(s) for s in hu])
    return out


def make_sampler(
    data: str,
    patch: int,
    channels: int,
    ct_real_mix: tuple[float, float, float] = CT_REAL_MIX,
    ct_extra: list[str | Path] | None = None,
):
    """(sampler, validation images, description) for a ``--data`` value; ``ct_real_mix`` are the
    shares of ellipses, real CT slices and natural images in ``ct-real`` batches, and
    ``ct_extra`` CT volumes whose slices join the real share."""
    gval = torch.Generator().manual_seed(987_654)  # validation phantoms: their own seed
    if data == "ellipses":
        s = ellipse_sampler(patch)
        return s, s(16, gval), f"random-ellipse phantoms {patch}x{patch}"
    if data == "ct-mix":
        nat = patch_sampler(natural_images(), patch)
        s = _mix(ellipse_sampler(patch), nat, 0.7)
        val = torch.cat(
            [
                ellipse_sampler(patch)(8, gval),
                center_crops(natural_images(VAL_IMAGES), 128)[:, :, :patch, :patch],
            ]
        )
        return s, val, f"70% ellipse phantoms + 30% skimage natural patches, {patch}x{patch}"
    if data == "ct-real":
        real = _and_half_scale(real_ct_slices())
        extra = ct_volume_slices(ct_extra or [])
        real += extra
        parts = [
            (ellipse_sampler(patch), ct_real_mix[0]),
            (patch_sampler(real, patch), ct_real_mix[1]),
            (patch_sampler(natural_images(), patch), ct_real_mix[2]),
        ]
        s = mix_samplers([(f, w) for f, w in parts if w > 0])
        _, val, _ = make_sampler("ct-mix", patch, channels)  # the same held-out set as ct-mix
        e, r, n = (f"{w / sum(ct_real_mix):.0%}" for w in ct_real_mix)
        nvol = len(ct_extra or [])
        more = f" and {len(extra) // 2} slices of {nvol} volume{'s' * (nvol != 1)}" if extra else ""
        desc = f"{e} ellipses + {r} real CT (pydicom head{more}) + {n} natural, {patch}x{patch}"
        return s, val, desc
    if data == "natural":
        return (
            patch_sampler(natural_images(), patch),
            center_crops(natural_images(VAL_IMAGES), 128),
            f"skimage natural images (train: {len(natural_images())}), {patch}x{patch} patches",
        )
    if data in ("mri-brain", "mri-mix"):
        from data.nifti import COLIN27, HELD_OUT, TRAIN_SLICES, nifti_slices

        brain = patch_sampler(nifti_slices(COLIN27, TRAIN_SLICES), patch)
        held = torch.from_numpy(np.stack(nifti_slices(COLIN27, list(HELD_OUT)[::6])))[:, None]
        val = complex_sampler(lambda b, g: held)(len(held), gval)
        rng = f"{TRAIN_SLICES.start}-{TRAIN_SLICES.stop - 1}"
        desc = f"Colin27 T1 axial slices {rng} ({COLIN27.name}), smooth random phase, {patch}px"
        if data == "mri-brain":
            return complex_sampler(brain), val, desc
        s = complex_sampler(mix_samplers([(brain, 0.6), (ellipse_sampler(patch), 0.4)]))
        return s, val, f"60% {desc}; 40% random-ellipse phantoms"
    if data == "mri-natural":
        s = complex_sampler(patch_sampler(natural_images(), patch))
        val = complex_sampler(lambda b, g: center_crops(natural_images(VAL_IMAGES), 128))(3, gval)
        return s, val, f"skimage natural images with smooth random phase, {patch}x{patch}"
    return _folder_sampler(Path(data), patch, channels, gval)


def _held_out(n: int) -> list[int]:
    """Indices of the files held out for validation among ``n`` sorted files: every
    HOLD_OUT_EVERY-th, or the last one when that is none; none when n < 2."""
    if n < 2:
        return []
    return list(range(HOLD_OUT_EVERY - 1, n, HOLD_OUT_EVERY)) or [n - 1]


def _warn_test_images(files: list[tuple[Path, list[np.ndarray]]]) -> None:
    """Warn (stderr) for each training file holding a bundled test image (``bundled:ct-small``,
    ``bundled:brain-t1``): `make demo`, the examples and the benchmarks reconstruct them, and a
    prior trained on one scores optimistically there. Images compare after min-max scaling, as
    ``read_image_folder`` stores them."""
    from data.bundled import BUNDLED, load_bundled

    def scaled(im: np.ndarray) -> np.ndarray:
        lo, hi = float(im.min()), float(im.max())
        return ((im - lo) / (hi - lo)).astype(np.float32)

    tests = {}
    for name in BUNDLED:
        im = load_bundled(name)
        tests[name] = scaled(np.asarray(getattr(im, "hu", im), np.float32))
    for path, images in files:
        for name, test in tests.items():
            if any(im.shape == test.shape and np.allclose(im, test, atol=1e-6) for im in images):
                print(
                    f"recon train: warning: {path} holds the bundled test image bundled:{name}, "
                    "which `make demo`, the examples and the benchmarks reconstruct; a prior "
                    "trained on it scores optimistically there (remove the file to keep it a "
                    "test)",
                    file=sys.stderr,
                )


# the validation PSNR reads this much below 20·log10(1/σ) when its patches span about half the
# images' range: below that, a warning says it is not comparable across --patch
VAL_RANGE_GAP_DB = 6.0


def _warn_small_validation_range(val: torch.Tensor, sigma: float, patch: int) -> None:
    """Warn (stderr) when the validation patches span much less than the images' range: the
    validation PSNR takes each patch's own range (max − min) as its data range, as the numbers
    in docs/training.md and the shipped priors' ``train_history`` do, while σ is relative to
    the whole images' range (1), so small or flat patches read many dB lower (negative at
    --patch 8, σ = 0.1) and the number is not comparable across --patch."""
    gap = 20 * math.log10(1 / sigma) - noisy_psnr(val, sigma)
    if gap > VAL_RANGE_GAP_DB:
        print(
            "recon train: warning: the validation PSNR is relative to each validation patch's "
            "own range (max − min), --sigma to the images' range (1): these "
            f"{patch}x{patch} patches read {gap:.1f} dB below 20·log10(1/σ) = "
            f"{20 * math.log10(1 / sigma):.1f} dB (val_input_psnr, the noisy input), so the "
            "number is not comparable across --patch; a larger --patch spans more of the range",
            file=sys.stderr,
        )


def _folder_sampler(folder: Path, patch: int, channels: int, gval: torch.Generator):
    """(sampler, validation patches, description) for ``--data FOLDER``: the training patches
    come from the files that are not held out (``_held_out``), the 8 validation patches from
    those that are (from the training images when the folder has one file)."""
    if not folder.is_dir():
        what = "a file" if folder.exists() else "not a folder"
        raise ValueError(
            f"--data {folder}: {what}; give a folder of your images, or one of "
            f"{', '.join(DATA_SOURCES)}"
        )
    found = read_image_folder(
        folder, patch, complex_images="magnitude" if channels == 2 else "refuse"
    )
    small = found.too_small
    if not found.files and found.skipped and not small and not found.constant:
        raise ValueError(
            f"--data {folder}: no image to train on: its {found.skipped} image file(s) hold "
            "none (k-space only, or DICOM objects without pixel data)"
        )
    if not found.files and found.constant and not small:
        raise ValueError(
            f"--data {folder}: no image to train on: {found.constant} constant image(s)"
            + (f", {found.skipped} file(s) without an image" if found.skipped else "")
        )
    if not found.files:
        skipped = found.skipped
        none = f"; {skipped} file{'s' * (skipped != 1)} without an image skipped" if skipped else ""
        raise ValueError(
            f"--data {folder}: no image is at least {patch}×{patch} (--patch {patch}; "
            f"{small} smaller image{'s' * (small != 1)}{none})"
        )
    held = _held_out(len(found.files))
    _warn_test_images([(f, found.images[i]) for i, f in enumerate(found.files) if i not in held])
    train = [im for i, ims in enumerate(found.images) if i not in held for im in ims]
    s = patch_sampler(train, patch)
    files = len(found.files) - len(held)
    n = len(train)
    desc = f"{n} image{'s' * (n != 1)} ({files} file{'s' * (files != 1)}) from {folder}, "
    desc += f"{patch}x{patch}"
    if held:
        names = [str(found.files[i].relative_to(folder)) for i in held]
        shown = f"file{'s' * (len(names) > 1)} {', '.join(names)}"
        if len(names) > 3:
            shown = f"{len(names)} files (every {HOLD_OUT_EVERY}th)"
        val = patch_sampler([im for i in held for im in found.images[i]], patch)(8, gval)
        desc += f"; validation: 8 patches of the held-out {shown}, never trained on"
    else:
        val = s(8, gval)
        desc += "; validation: 8 patches of the training images (one file: nothing held out)"
    if small:
        desc += f"; {small} image{'s' * (small != 1)} smaller than {patch}×{patch} left out"
    if channels == 2:
        s, val = complex_sampler(s), complex_sampler(lambda b, g: val)(8, gval)
        desc += "; magnitudes with a smooth random phase (2 channels)"
    return s, val, desc


def _data_channels(data: str, asked: int | None, init_channels: int | None) -> int:
    """The channels of the training images: 2 for the mri-* sources and 1 for the other
    built-in ones (ValueError when --channels asks for others); for a FOLDER, --channels, else
    the --init prior's, else 1."""
    if data in DATA_SOURCES:
        fixed = 2 if data in MRI_SOURCES else 1
        if asked is not None and asked != fixed:
            raise ValueError(f"--channels {asked}: --data {data} gives {fixed}-channel images")
        return fixed
    return asked or init_channels or 1


def _parse_mix(text: str) -> tuple[float, float, float]:
    """--ct-real-mix "E,R,N" as three shares ≥ 0, not all zero."""
    try:
        mix = tuple(float(v) for v in text.split(","))
    except ValueError:
        mix = ()
    if len(mix) != 3 or min(mix) < 0 or sum(mix) <= 0:
        raise ValueError(f"--ct-real-mix must be three shares ≥ 0 like 0.4,0.4,0.2, got {text!r}")
    return mix  # type: ignore[return-value]


def _load_init(name: str) -> torch.nn.Module:
    """The --init prior ``name`` (shipped name or checkpoint); ValueError for one that cannot
    be trained (``tv``)."""
    from priors.checkpoint import CheckpointError, load_prior

    try:
        model = load_prior(name)
    except CheckpointError as exc:
        raise ValueError(f"--init: {exc}") from None
    if not hasattr(model, "config"):
        raise ValueError(f"--init {name}: not a learned prior, nothing to train")
    return model


def _init_model(name: str, kind: str | None, channels: int, **changes: Any) -> torch.nn.Module:
    """The prior ``name`` (shipped name or checkpoint) in training mode, checked against --kind
    (``None``: any kind) and the data's channels, rebuilt with the architecture ``changes``
    that differ from its own (``None`` values are ignored; see ``priors.checkpoint.rebuild``:
    all weights carry over, a global feature added here starts at zero, so training starts from
    exactly the given prior)."""
    from priors.checkpoint import rebuild

    model = _load_init(name).train()
    got = model.config()
    if kind is not None and got["kind"] != kind:
        raise ValueError(
            f"--init {name}: a {got['kind']} prior, but --kind {kind} was asked for (leave "
            "--kind out to train the prior's own kind)"
        )
    if got.get("in_channels", 1) != channels:
        raise ValueError(
            f"--init {name}: a prior for {got.get('in_channels', 1)}-channel images, but the "
            f"training data has {channels} channel(s)"
        )
    if got["kind"] == RIDGE_KIND:  # the mode and the groups are the options to change
        return _init_ridge(
            name, model, changes.get("ridge_mode"), changes.get("groups"),
            changes.get("group_start") or 0.0,
        )  # fmt: skip
    changes.pop("group_start", None)  # (ridge only, as groups and ridge_mode, None here)
    want = {k: v for k, v in changes.items() if v is not None and v is not False}
    if "tile" in want:  # a given tile gets its own stride (None: ConvLPN's default)
        want["tile_stride"] = changes.get("tile_stride")
    try:
        rebuilt = rebuild(model, **want)
    except CheckpointError as exc:
        raise ValueError(f"--init {name}: {exc}") from None
    # ConvLPN records only non-default options, so an unchanged architecture has the same config
    return model if rebuilt.config() == got else rebuilt


def _init_ridge(
    name: str, model: RidgeProx, mode: str | None, groups: int | None, group_start: float = 0.0
) -> RidgeProx:
    """``model`` rebuilt in ``mode`` and/or with ``groups`` groups, its weights carried over; a
    new prox mode starts at λ = 4 (its init), new groups start with zero curves (switched off,
    so the prox is the given one's, up to the inner solve's tolerance) or, with ``group_start``
    w > 0, as Huber-TV of width w."""
    got = model.config()
    old_mode, old_groups = got.get("mode", "gradient-step"), got.get("groups", 0)
    mode = mode or old_mode
    groups = old_groups if groups is None else groups
    if mode == old_mode and groups == old_groups:
        return model
    if old_groups and groups != old_groups:
        raise ValueError(f"--init {name}: has {old_groups} groups; --groups cannot change that")
    keep = ("kind", "mode", "tol", "max_iters", "groups", "group_knots", "group_range")
    cfg = {k: v for k, v in got.items() if k not in keep}
    if "dilations" in cfg:
        cfg["dilations"] = tuple(cfg["dilations"])
    extra = {k: got[k] for k in ("group_knots", "group_range") if k in got}
    try:
        rebuilt = RidgeProx(**cfg, mode=mode, groups=groups, **extra)
    except ValueError as exc:
        raise ValueError(f"--init {name}: {exc}") from None
    missing, unexpected = rebuilt.load_state_dict(model.state_dict(), strict=False)
    new = {"log_strength"} if old_mode != "prox" else set()
    if groups != old_groups:
        new |= {"group_weight", "group_slopes", "log_group_width", "group_knot_grid"}
    if unexpected or not set(missing) <= new:
        raise ValueError(f"--init {name}: cannot start a {mode} ridge from it")
    if groups > old_groups:
        with torch.no_grad():
            rebuilt.group_slopes.zero_()
            if group_start > 0:
                rebuilt.group_slopes[:, 0] = 1.0
                rebuilt.log_group_width.fill_(math.log(group_start))
    return rebuilt.train()


def training_stages(meta: dict) -> list[str]:
    """The `recon train` commands that made a prior, oldest first (its ``stages``, or else its
    one ``command``), from its checkpoint metadata."""
    stages = meta.get("stages")
    if isinstance(stages, list) and all(isinstance(c, str) for c in stages):
        return list(stages)
    return [meta["command"]] if isinstance(meta.get("command"), str) else []


# metadata that describes a checkpoint file rather than its weights' training record: a
# --steps 0 conversion does not copy it from its --init source
SOURCE_FILE_META = ("package_version", "exported_from")


def export_weights(checkpoint: str | Path, out: str | Path) -> None:
    """Copy a training checkpoint without optimizer/RNG state (a small file to ship)."""
    tensors, info = read_checkpoint(checkpoint)
    model = build_model(info["config"])
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    meta = {**info["meta"], "exported_from": str(Path(checkpoint).resolve())}
    history = info["train"].get("history")
    if history:  # (a --steps 0 conversion has none and keeps its source's)
        meta["train_history"] = {k: history.get(k, []) for k in ("val_step", "val_psnr")}
    save_checkpoint(out, model, meta)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a learned proximal prior",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--kind",
        default=None,
        choices=(*KINDS, RIDGE_KIND),
        help=f"(default aelpn, or with --init the prior's own kind) {RIDGE_KIND}: the "
        "convex-ridge AE-LPN, firmly nonexpansive by construction (priors.ridge; told the noise "
        "level; --filters, --kernel)",
    )
    p.add_argument(
        "--data",
        default="ct-mix",
        help=" | ".join((*DATA_SOURCES, "FOLDER")) + " (default ct-mix; see above)",
    )
    p.add_argument(
        "--ct-real-mix",
        default=None,
        metavar="E,R,N",
        help="--data ct-real: shares of ellipse phantoms, real CT slices and natural images in "
        f"each batch (default {','.join(f'{w:g}' for w in CT_REAL_MIX)})",
    )
    p.add_argument(
        "--ct-real-extra",
        action="append",
        default=None,
        metavar="VOLUME",
        help="--data ct-real: every slice of this CT volume in HU (NRRD or NIfTI file, DICOM "
        "series folder or DICOM file) joins the real-CT share; repeatable",
    )
    p.add_argument(
        "--channels",
        type=int,
        choices=(1, 2),
        default=None,
        help="1 (CT) or 2 (complex MRI) for --data FOLDER (default: the --init prior's, else 1; "
        "the mri-* sources have 2 channels, the others 1)",
    )
    p.add_argument(
        "--sigma",
        type=float,
        default=0.1,
        help="training noise level (images in [0, 1]; default 0.1)",
    )
    p.add_argument(
        "--sigma-max",
        type=float,
        default=None,
        help="train blind: σ per image uniform in [--sigma, --sigma-max] (γ follows each σ; "
        "validation stays at --sigma)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=2000,
        help="optimizer steps (default 2000); 0 with --init writes the given prior in the "
        "architecture asked for (e.g. with --tile) without training",
    )
    p.add_argument(
        "--l1-fraction",
        type=float,
        default=0.5,
        help="share of the steps in the L1 warm-up before proximal matching (0 to skip it)",
    )
    p.add_argument(
        "--gamma-unit",
        action=GivenStore,
        type=float,
        default=None,
        help="per-pixel proximal-matching γ unit (default 0.8·σ: 0.08 at σ = 0.1, as the LPN code)",
    )
    p.add_argument(
        "--loss",
        choices=LOSSES,
        default="prox-matching",
        help="loss after the L1 warm-up: proximal matching (the LPN paper's, aims at the MAP "
        "prox) or the mean squared error (aims at the MMSE denoiser, itself the gradient of a "
        "convex function, so still an exact prox), or mse-relative: each image's squared "
        "error over its σ², so that every noise level of a blind run counts alike",
    )
    p.add_argument(
        "--sigma-sampling",
        action=GivenStore,
        choices=SIGMA_SAMPLING,
        default="uniform",
        help="with --sigma-max: σ per image uniform in [--sigma, --sigma-max] or log-uniform",
    )
    p.add_argument(
        "--lr",
        type=float,
        default=1e-4,
        help="Adam learning rate after the L1 warm-up (default 1e-4)",
    )
    p.add_argument(
        "--lr-schedule",
        choices=LR_SCHEDULES,
        default="constant",
        help="after the warm-up: constant, or a half-cosine decay to 5%% of --lr at the last step",
    )
    p.add_argument(
        "--init",
        default=None,
        help="start from the weights of this prior (a shipped name or a checkpoint) to fine-tune "
        "it, e.g. at another σ or on your own data; the architecture (and, without --kind, the "
        "kind) is taken from it",
    )
    p.add_argument(
        "--artifacts",
        type=float,
        default=0.0,
        metavar="FRACTION",
        help="CT only: this share of each batch is degraded by sparse-view FBP streaks "
        "(30-120 views, 0.5-2%% sinogram noise, scaled by 0.1-1; see data.ct_artifacts) "
        "instead of Gaussian noise, so the prior learns the errors PnP iterates carry "
        "(measured on our real-CT validation: worse than Gaussian noise alone; see "
        "docs/results/ct-prior-training.md)",
    )
    p.add_argument(
        "--artifact-size",
        type=int,
        default=128,
        help="side of the whole images the streaks are simulated on before cropping a patch",
    )
    p.add_argument(
        "--contrast-min",
        type=float,
        default=1.0,
        help="scale each training image's contrast about its mean by a ~ U[this, 1] (default "
        "1: off); at a fixed --sigma every model then meets several noise-to-content ratios",
    )
    p.add_argument("--batch", type=count(1), default=8, help="images per step (default 8)")
    p.add_argument(
        "--patch", type=count(4), default=48, help="side of the training patches (default 48)"
    )
    p.add_argument("--width", action=GivenStore, type=int, default=32, help="(default 32)")
    p.add_argument(
        "--filters",
        action=GivenStore,
        type=int,
        default=64,
        help=f"{RIDGE_KIND}: number of filters",
    )
    p.add_argument(
        "--kernel", action=GivenStore, type=int, default=7, help=f"{RIDGE_KIND}: filter size (odd)"
    )
    p.add_argument(
        "--dilations",
        action=GivenStore,
        default="1",
        help=f"{RIDGE_KIND}: comma-separated dilations, one equal group of filters each "
        "(e.g. 1,2: half the filters see twice the area)",
    )
    p.add_argument(
        "--slope-bound",
        action="store_true",
        help=f"{RIDGE_KIND}: normalize W by the bound of S^½W (S: each filter's largest slope), "
        "so filters that never shrink fully take less of the norm budget",
    )
    p.add_argument(
        "--ridge-mode",
        choices=RIDGE_MODES,
        default=None,
        help=f"{RIDGE_KIND}: gradient-step (default; f = x − QWᵀg(WQx), closed form) or prox "
        "(the exact prox of the learned convex regularizer λ·Σp(WQx), λ learned, by an inner "
        "solve; trained through its fixed point). With --init of a gradient-step prior, its "
        "filters and curves start the prox",
    )
    p.add_argument(
        "--groups",
        type=int,
        default=None,
        help=f"{RIDGE_KIND} in prox mode: add G groups of 2·C learned filters (∂x, ∂y per "
        "channel at first) whose responses enter through their norm, an isotropic, TV-like "
        "part of the convex regularizer. With --init of a prior without them, they start "
        "switched off (zero curves), so training starts from exactly that prior",
    )
    p.add_argument(
        "--group-start",
        action=GivenStore,
        type=float,
        default=0.0,
        help="with --groups and --init: the new groups start as Huber-TV (first curve segment "
        "slope 1) of this width instead of switched off (0, the default: training starts from "
        "exactly the given prior, but a part that hurts at first never switches on)",
    )
    p.add_argument("--levels", action=GivenStore, type=int, default=3, help="(default 3)")
    p.add_argument("--depth", action=GivenStore, type=int, default=2, help="(default 2)")
    p.add_argument(
        "--out-channels",
        action=GivenStore,
        type=int,
        default=1,
        help="K convex maps per pixel (the AE-LPN squares and sums all K)",
    )
    p.add_argument(
        "--upsample",
        action=GivenStore,
        default=None,
        choices=["nearest", "bilinear"],
        help="decoder upsampling (both keep the network convex and homogeneous; default "
        "nearest, or with --init the prior's own, which this replaces: it has no weights)",
    )
    p.add_argument(
        "--downsample",
        action=GivenStore,
        default=None,
        choices=["avg", "blur"],
        help="how x reaches the coarser scales: 2x2 averaging (default) or a [1,3,3,1] blur at "
        "stride 2, whose adjoint in the prox leaves no blocks in flat regions (with --init, "
        "replaces the prior's own: it has no weights)",
    )
    p.add_argument(
        "--z-downsample",
        action=GivenStore,
        default=None,
        choices=["stride", "blur"],
        help="how the convex path halves the resolution: a strided convolution (default) or a "
        "stride-1 convolution then the [1,3,3,1] blur (no checkerboard in the prox; with "
        "--init, replaces the prior's own: the weights keep their shapes)",
    )
    p.add_argument(
        "--padding",
        action=GivenStore,
        default=None,
        choices=["zeros", "replicate"],
        help="how the convolutions extend the image at its border (default zeros; replicate "
        "avoids seams between --tile windows; with --init, replaces the prior's own)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="apply the AE-LPN's potential on every TILE x TILE window of larger images, each "
        "with its own mean split off, as in training on patches (exact prox, exactly "
        "equivariant; inference only: patches no larger than TILE are one window). "
        "Recorded in the checkpoint; with --init, added to the given prior",
    )
    p.add_argument(
        "--tile-stride",
        action=GivenStore,
        type=int,
        default=None,
        help="window stride for --tile (default TILE/3)",
    )
    p.add_argument(
        "--local-mean",
        type=float,
        default=None,
        metavar="SIGMA",
        help="split off a local mean (a Gaussian of SIGMA pixels) instead of the image mean, so "
        "the AE-LPN sees each pixel against its surroundings at every image size (exact prox, "
        "exactly equivariant, no windows or seams; aelpn and shift-only; with --init, added to "
        "the given prior)",
    )
    p.add_argument(
        "--noise-input",
        action="store_true",
        help="tell the network the noise level σ as an extra input channel (exact prox for each "
        "σ; f(a·x + b; a·σ) = a·f(x; σ) + b exactly). Train with --sigma-max so it knows a "
        "range of σ; `recon ct/mri` then set σ from --prior-sigma-noise / --prior-sigma-rel",
    )
    p.add_argument(
        "--global-pool",
        action="store_true",
        help="give the decoder a whole-image feature (mean of the coarsest features; keeps the "
        "network convex and homogeneous), so responses are weighed against global energy "
        "(measured: +0.03-0.10 dB on natural images, none on CT; see "
        "docs/results/ct-prior-training.md)",
    )
    p.add_argument(
        "--act", action=GivenStore, default="smooth", choices=["smooth", "leaky_relu", "relu"]
    )
    p.add_argument(
        "--sigma-smoothing",
        action="store_true",
        help="with --noise-input (or --init of such a prior): the activations smooth at the told "
        "noise level (κ·σ² under each square root, κ learned, 0 at --init: the same prox to "
        "start), which bounds the prox's Jacobian; use with --fne-weight",
    )
    p.add_argument(
        "--fne-weight",
        type=float,
        default=0.0,
        help="penalize the largest eigenvalue of the prox's Jacobian above --fne-target, so the "
        "prox becomes firmly nonexpansive (the prox of a convex R: PnP converges); 0: off. "
        "Check the result with `recon prior check`",
    )
    p.add_argument(
        "--fne-target",
        type=float,
        default=1.0,
        help="eigenvalue aimed below (1: an AE-LPN keeps constants, so its λ_max is at least 1)",
    )
    p.add_argument("--fne-batch", type=int, default=4, help="images per step the penalty looks at")
    p.add_argument("--fne-iters", type=int, default=4, help="power iterations per penalty estimate")
    p.add_argument(
        "--fne-ramp",
        type=float,
        default=0.3,
        help="the penalty weight grows linearly over this fraction of the steps",
    )
    p.add_argument(
        "--fne-sigma-min",
        type=float,
        default=0.005,
        help="smallest told σ the penalty looks at (log-uniform up to --sigma-max)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the initial weights and the batches (default 0)"
    )
    p.add_argument(
        "--ckpt-every", type=count(1), default=100, help="checkpoint every N steps (default 100)"
    )
    p.add_argument(
        "--val-every", type=count(1), default=100, help="validate every N steps (default 100)"
    )
    p.add_argument(
        "--out",
        required=True,
        help="checkpoint file (.safetensors), written every --ckpt-every steps; rerunning the "
        "same command resumes it exactly (changed --threads, --device, --ckpt-every, "
        "--val-every, --export, --quiet allowed; --steps too while the steps done keep their "
        "schedule); other changed options are refused",
    )
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="start over even if --out holds a checkpoint (overwrites it; a file that is not a "
        "checkpoint is never overwritten)",
    )
    p.add_argument(
        "--export",
        default=None,
        help="also write a small shippable copy here (a new file, or this --out's own earlier "
        "export; another run's checkpoint or export is never replaced)",
    )
    p.add_argument(
        "--threads", type=count(1), default=None, help="torch CPU threads (default: torch's)"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, no data summary")


def _init_distributed(device: str) -> tuple[int, int, str, bool]:
    """Join the torchrun process group when launched with WORLD_SIZE > 1.

    Returns (rank, world size, this rank's device, whether this call created the group)."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device, False
    cuda = device.startswith("cuda")
    if cuda:
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available")
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        created = True
    return dist.get_rank(), dist.get_world_size(), device, created


def _check_device(name: str) -> None:
    """ValueError for a --device torch does not know, or CUDA where there is none."""
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name}: not a device (cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device is available")


def _existing_checkpoint(path: str, option: str, no_resume: bool = False) -> dict | None:
    """The decoded metadata of the checkpoint at ``path`` (--out or --export), None when there
    is no file; ValueError naming the option when ``path`` is a folder or a file that is not a
    checkpoint (never overwritten)."""
    p = Path(path)
    if p.is_dir():
        raise ValueError(
            f"{option} {p}: a folder; give a checkpoint file path, e.g. {p / 'prior.safetensors'}"
        )
    if not p.exists():
        return None
    try:
        return read_checkpoint(p)[1]
    except CheckpointError as exc:
        only = "--no-resume overwrites only checkpoints: " if no_resume else ""
        raise ValueError(f"{option} {exc}; {only}remove it or give another {option}") from None


def _check_suffix(path: str, option: str) -> None:
    """ValueError when ``path`` does not end in .safetensors: the file written is one, and a
    .pt name says a pickle (which nothing here loads)."""
    p = Path(path)
    if p.suffix.lower() != ".safetensors":
        raise ValueError(
            f"{option} {p}: checkpoints are safetensors files; give a name ending in "
            f".safetensors (e.g. {p.with_suffix('.safetensors')})"
        )


def _check_export(export: str, out: str) -> None:
    """ValueError naming ``export`` when writing the export there would destroy a file this
    run did not write: another run's training checkpoint (its resume state), or any prior
    other than this --out's own earlier export (``meta["exported_from"]``, the --out's
    absolute path). No file, or this run's earlier export: returns."""
    info = _existing_checkpoint(export, "--export")
    if info is None:
        return
    if "step" in info["train"] or "param_groups" in info["train"]:
        step = info["train"].get("step")
        held = f" of {step} step{'s' * (step != 1)}" if isinstance(step, int) else ""
        raise ValueError(
            f"--export {export}: holds a training checkpoint{held} (another run's --out); the "
            "export would replace it and that run could not resume: give another --export"
        )
    source = info["meta"].get("exported_from")
    if source != str(Path(out).resolve()):
        what = f"the export of {source}" if source else "a prior that this --out did not export"
        raise ValueError(
            f"--export {export}: holds {what}; --export replaces only this --out's own earlier "
            "export: give another --export, or remove the file"
        )


# Options that leave the trained weights as they are: not compared on resume (--steps: see
# _resume_conflicts)
NOT_RESULT_OPTIONS = (
    "threads", "device", "quiet", "no_resume", "out", "export", "ckpt_every", "val_every", "steps",
    "func", "command", "debug", "given",
)  # fmt: skip
# Architecture options: the checkpoint's config records what they built (with --init, the
# prior's architecture and the changes asked for), and _resume_conflicts compares that
ARCH_OPTIONS = (
    "kind", "channels", "width", "levels", "depth", "out_channels", "upsample", "downsample",
    "z_downsample", "padding", "tile", "tile_stride", "local_mean", "noise_input", "global_pool",
    "act", "sigma_smoothing", "filters", "kernel", "dilations", "slope_bound", "ridge_mode",
    "groups",
)  # fmt: skip
CONFIG_OPTIONS = {"in_channels": "channels", "local_mean_sigma": "local_mean", "mode": "ridge_mode"}
# TrainConfig fields -> options, to compare with checkpoints written before meta["options"]
TRAIN_CONFIG_OPTIONS = {
    "sigma": "sigma", "sigma_max": "sigma_max", "sigma_sampling": "sigma_sampling",
    "batch": "batch", "lr_pm": "lr", "l1_fraction": "l1_fraction", "seed": "seed",
    "loss": "loss", "lr_schedule": "lr_schedule", "artifact_fraction": "artifacts",
    "contrast_min": "contrast_min", "fne_weight": "fne_weight", "fne_target": "fne_target",
    "fne_batch": "fne_batch", "fne_iters": "fne_iters", "fne_ramp": "fne_ramp",
    "fne_sigma_min": "fne_sigma_min",
}  # fmt: skip


def _result_options(args: argparse.Namespace, mix: tuple[float, float, float]) -> dict:
    """The options that decide the trained weights besides the architecture and --steps, as
    the checkpoint records them (``meta["options"]``): paths made absolute, --ct-real-mix as
    used."""
    skip = {*NOT_RESULT_OPTIONS, *ARCH_OPTIONS}
    opts = {k: v for k, v in vars(args).items() if k not in skip}
    if args.data not in DATA_SOURCES:
        opts["data"] = str(Path(args.data).resolve())
        opts["data_files"] = folder_digest(args.data)
    opts["ct_real_mix"] = list(mix) if args.data == "ct-real" else None
    if args.ct_real_extra:
        opts["ct_real_extra"] = [str(Path(v).resolve()) for v in args.ct_real_extra]
    if args.init and args.init not in shipped_priors():
        opts["init"] = str(Path(args.init).resolve())
    return opts


def folder_digest(folder: str | Path) -> str:
    """The number and a SHA-256 (16 hex digits) of the image files under ``folder`` (their
    paths relative to it and their bytes, in ``image_files`` order), e.g. ``"12 files
    3f2a…"``: a resumed run refuses a folder whose files changed since its checkpoint, since
    that would change both the training images and the held-out validation files."""
    import hashlib

    from data.training_sets import image_files

    root = Path(folder)
    h = hashlib.sha256()
    files = image_files(root) if root.is_dir() else []
    for f in files:
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return f"{len(files)} file{'s' * (len(files) != 1)} {h.hexdigest()[:16]}"


# architecture option -> the kinds whose network reads it; given with another kind it is
# refused by name (_check_unread_options: they used to be accepted and dropped). The
# normalization trick is an LPN inside (its activation fixed, as lpn's and shift-only's:
# only the homogeneous kinds take --act). --tile, --local-mean, --noise-input: the model (or
# the fne-ridge refusal in _train) says which kinds take them.
HOMOGENEOUS_KINDS = ("aelpn", "aelpn-global", "scale-only")
READ_BY = {
    **dict.fromkeys(
        ("width", "levels", "depth", "out_channels", "upsample", "downsample", "z_downsample",
         "padding", "global_pool"),
        KINDS,
    ),
    "act": HOMOGENEOUS_KINDS,
    **dict.fromkeys(("filters", "kernel", "dilations", "slope_bound"), (RIDGE_KIND,)),
}  # fmt: skip


# architecture options --init takes from the prior (its weights have their shapes), each the
# key of its value in the prior's config -> the value a config without that key records
INIT_ARCH = {
    "width": None, "levels": None, "depth": None, "act": None, "out_channels": None,
    "filters": None, "kernel": None, "dilations": [1], "slope_bound": False,
}  # fmt: skip


def _check_init_architecture(args: argparse.Namespace, config: dict) -> None:
    """ValueError naming the architecture options given with --init (``INIT_ARCH``) that differ
    from the --init prior's ``config`` (which would be ignored: --init takes the architecture
    from the prior); options equal to the prior's values are accepted."""
    given = getattr(args, "given", set()) | ({"slope_bound"} if args.slope_bound else set())
    wrong = []
    for opt in INIT_ARCH:
        if opt not in given:
            continue
        value = getattr(args, opt)
        if opt == "dilations":
            try:
                value = [int(d) for d in str(value).split(",")]
            except ValueError:
                pass
        if opt == "kernel" and config.get("kind") != RIDGE_KIND:
            has = None  # a ConvLPN's kernel is not --kernel's (fne-ridge's filter size)
        else:
            has = config.get(opt, INIT_ARCH[opt])
        if value != has:
            flag = f"--{opt.replace('_', '-')}" + ("" if opt == "slope_bound" else f" {value}")
            prior = "none" if has is None else has
            wrong.append(f"{flag} (the prior's: {prior})")
    if wrong:
        raise ValueError(
            f"{', '.join(wrong)}: --init takes the architecture from the prior ({args.init}, "
            f"a {config.get('kind')} prior); leave {'them' if len(wrong) > 1 else 'it'} out"
        )


def _check_unread_options(args: argparse.Namespace, kind: str) -> None:
    """ValueError naming options the user gave (``GivenStore``) that this run would not read:
    architecture options ``READ_BY`` says ``kind`` does not read (with --init, those of
    ``INIT_ARCH`` are _check_init_architecture's), --group-start without --groups, --tile-stride
    without --tile, --gamma-unit with a loss that has no γ, --sigma-sampling without
    --sigma-max; and --l1-fraction outside [0, 1]."""
    # (--global-pool and --slope-bound are switches: given when on)
    given = getattr(args, "given", set()) | {o for o in READ_BY if getattr(args, o) is True}
    # with --init, INIT_ARCH's options are compared with the prior's (_check_init_architecture)
    skip = set(INIT_ARCH) if args.init else set()
    unread = [
        f"--{o.replace('_', '-')}"
        for o in READ_BY
        if o in given and o not in skip and kind not in READ_BY[o]
    ]
    if unread:
        raise ValueError(f"{', '.join(unread)}: not read by --kind {kind}")
    needs = {"group_start": ("--groups", args.groups is not None),
             "tile_stride": ("--tile", args.tile is not None),
             "sigma_sampling": ("--sigma-max", args.sigma_max is not None),
             "gamma_unit": ("--loss prox-matching", args.loss == "prox-matching")}  # fmt: skip
    for opt, (what, ok) in needs.items():
        if opt in given and not ok:
            raise ValueError(f"--{opt.replace('_', '-')}: only read with {what}")
    if not 0 <= args.l1_fraction <= 1:
        raise ValueError(f"--l1-fraction must be in [0, 1], got {args.l1_fraction}")


def _resume_conflicts(
    info: dict, options: dict, cfg: TrainConfig, model: torch.nn.Module
) -> list[str]:
    """``"name: old -> new"`` for each option that differs between the checkpoint ``info``
    and this run: the recorded options (older checkpoints: their training config), the
    architecture, and --steps unless the steps done keep their schedule (then the resumed run
    ends where a run with the new --steps from the start does)."""
    meta = info["meta"]
    old = meta.get("options")
    if not isinstance(old, dict):  # written before the options were recorded
        tc = meta.get("train_config") or {}
        old = {opt: tc[f] for f, opt in TRAIN_CONFIG_OPTIONS.items() if f in tc}
        if "patch" in meta:
            old["patch"] = meta["patch"]
    now = json.loads(json.dumps(options))  # tuples as lists, as they read back
    diff = {k: (old[k], now[k]) for k in old.keys() & now.keys() if old[k] != now[k]}
    arch_old, arch_new = info["config"], model.config()
    for key in set(arch_old) | set(arch_new):
        if arch_old.get(key) != arch_new.get(key):
            diff[CONFIG_OPTIONS.get(key, key)] = (arch_old.get(key), arch_new.get(key))
    tc = meta.get("train_config")
    done = int(info["train"].get("step", 0))
    if isinstance(tc, dict) and tc.get("steps") != cfg.steps:
        known = {k: v for k, v in tc.items() if k in TrainConfig.__dataclass_fields__}
        try:
            before = TrainConfig(**{**known, "gammas": tuple(known.get("gammas", cfg.gammas))})
        except (TypeError, ValueError):
            before = None
        if before is None or cfg.steps < done or not same_schedule(before, cfg, done):
            diff["steps"] = (tc.get("steps"), cfg.steps)
    return [f"{k.replace('_', '-')}: {diff[k][0]!r} -> {diff[k][1]!r}" for k in sorted(diff)]


def _preset_from(init: str | None, source_meta: dict) -> str | None:
    """The shipped prior a run started from: ``init`` itself when it names one (or its file, or
    a byte copy of it: ``recon.pipeline.shipped_copy``, as presets find it), else the
    ``preset_from`` its checkpoint recorded (an older checkpoint's ``init`` when that names a
    shipped prior, as ``recon.pipeline.preset_from`` reads it); None without --init."""
    from recon.pipeline import shipped_copy

    if not init:
        return None
    shipped = shipped_priors()
    if init in shipped:
        return init
    copy = shipped_copy(init, shipped)
    if copy is not None:
        return copy
    got = source_meta.get("preset_from") or source_meta.get("init")  # older: only "init"
    return got if isinstance(got, str) and got in shipped else None


def _interrupted(args: argparse.Namespace, exc: TrainingInterrupted) -> str:
    """The line that says what an interrupted run left in --out."""
    if exc.saved is not None:
        return (
            f"recon train: interrupted at step {exc.step}; {args.out} holds step {exc.saved}: "
            "rerun the same command to resume"
        )
    first = min(args.ckpt_every, args.steps)
    left = f"; {args.out} still holds the earlier run" if Path(args.out).exists() else ""
    return (
        f"recon train: interrupted at step {exc.step}: nothing was saved (the first checkpoint "
        f"comes at step {first}, --ckpt-every {args.ckpt_every}){left}"
    )


def run(args: argparse.Namespace) -> int:
    """`recon train`: check the options, train (under torchrun, one rank per process) and
    write the checkpoint; returns the exit status."""
    _check_device(str(args.device))
    if args.threads:
        torch.set_num_threads(args.threads)
    rank, world, device, created = _init_distributed(str(args.device))
    try:
        rc = _train(args, rank, world, device)
    finally:
        if created:
            import torch.distributed as dist

            # every rank waits here for the others before the group is torn down: a rank that
            # destroyed it while rank 0 was still writing the checkpoint made gloo abort
            # ("terminate called without an active exception") at exit now and then
            dist.barrier()
            dist.destroy_process_group()
    if created:
        # Gloo's worker threads can still hold tensors when the interpreter finalizes, and then
        # abort the process (SIGABRT) after a successful run (seen on a fresh clone, 1 run in
        # ~10). The checkpoint is written (atomically) and the group destroyed: leave without
        # finalizing, with the run's exit status.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(rc or 0))
    return rc


def _train(args: argparse.Namespace, rank: int, world: int, device: str) -> int:
    existing = _existing_checkpoint(args.out, "--out", args.no_resume)
    _check_suffix(args.out, "--out")
    if args.export:
        _check_suffix(args.export, "--export")
        if Path(args.export).resolve() == Path(args.out).resolve():
            raise ValueError(
                f"--export {args.export} is --out: the export (weights only) would replace the "
                "training checkpoint, and a rerun could not resume; give it another name"
            )
        _check_export(args.export, args.out)
    if not args.sigma > 0:
        raise ValueError(f"--sigma must be > 0, got {args.sigma}")
    if args.steps < 0 or (args.steps == 0 and not args.init):
        raise ValueError(f"--steps must be ≥ 1 (or 0 with --init), got {args.steps}")
    if args.sigma_max is not None and not args.sigma_max > args.sigma:
        raise ValueError(f"--sigma-max must exceed --sigma ({args.sigma}), got {args.sigma_max}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be > 0, got {args.lr}")
    if not 0.0 < args.contrast_min <= 1.0:
        raise ValueError(f"--contrast-min must be in (0, 1], got {args.contrast_min}")
    if not 0.0 <= args.artifacts <= 1.0:
        raise ValueError(f"--artifacts must be a fraction in [0, 1], got {args.artifacts}")
    init = _load_init(args.init) if args.init else None
    init_meta = dict(getattr(init, "meta", None) or {})
    kind = args.kind or (init.config()["kind"] if init is not None else "aelpn")
    channels = _data_channels(
        args.data, args.channels, init.config().get("in_channels", 1) if init else None
    )
    if args.ct_real_mix is not None and args.data != "ct-real":
        raise ValueError(f"--ct-real-mix mixes the --data ct-real batches, not --data {args.data}")
    if args.ct_real_extra and args.data != "ct-real":
        raise ValueError(f"--ct-real-extra adds to --data ct-real batches, not --data {args.data}")
    # the option conflicts, before the data are read (that can take minutes)
    if args.artifacts > 0 and channels != 1:
        raise ValueError("--artifacts simulates CT streaks: it needs 1-channel (CT) data")
    if args.noise_input and (args.init or kind == "normalization-trick"):
        raise ValueError(
            "--noise-input builds a new network (one more input channel): not with --init "
            "(a noise-input prior keeps the option) or the normalization trick"
        )
    if init is not None:
        _check_init_architecture(args, init.config())
    _check_unread_options(args, kind)
    if args.ridge_mode and kind != RIDGE_KIND:
        raise ValueError(f"--ridge-mode is for --kind {RIDGE_KIND}, not --kind {kind}")
    if args.groups is not None and kind != RIDGE_KIND:
        raise ValueError(f"--groups is for --kind {RIDGE_KIND}, not --kind {kind}")
    if kind == RIDGE_KIND:  # (with --init too: a ridge prior is rebuilt without them)
        if args.noise_input or args.local_mean or args.sigma_smoothing or args.tile:
            raise ValueError(
                f"--kind {RIDGE_KIND} is always told the noise level and splits off the image "
                "mean: --noise-input, --local-mean, --sigma-smoothing and --tile do not apply"
            )
    if not args.init and kind == RIDGE_KIND:
        try:
            dilations = tuple(int(d) for d in args.dilations.split(","))
        except ValueError:
            raise ValueError(f"--dilations: integers like 1,2, got {args.dilations!r}") from None
    mix = _parse_mix(args.ct_real_mix) if args.ct_real_mix is not None else CT_REAL_MIX
    extra = args.ct_real_extra
    sampler, val, desc = make_sampler(args.data, args.patch, channels, mix, extra)
    if rank == 0 and not args.quiet:
        print(f"recon train: data: {desc}", file=sys.stderr)
    if rank == 0 and val is not None:
        _warn_small_validation_range(val, args.sigma, args.patch)
    pairs = None
    if args.artifacts > 0:
        from data.ct_artifacts import sparse_view_pairs

        whole, _, _ = make_sampler(args.data, args.artifact_size, channels, mix, extra)
        pairs = sparse_view_pairs(whole, args.artifact_size, args.patch)
        desc += (
            f"; {args.artifacts:.0%} of each batch with sparse-view FBP streaks "
            f"(simulated on {args.artifact_size}px images)"
        )
    arch = dict(
        in_channels=channels,
        width=args.width,
        levels=args.levels,
        depth=args.depth,
        out_channels=args.out_channels,
        upsample=args.upsample or "nearest",
        **({"global_pool": True} if args.global_pool else {}),
        **({"downsample": args.downsample} if args.downsample not in (None, "avg") else {}),
        **({"z_downsample": args.z_downsample} if args.z_downsample == "blur" else {}),
        **({"tile": args.tile, "tile_stride": args.tile_stride} if args.tile else {}),
        **({"padding": args.padding} if args.padding == "replicate" else {}),
        **({"local_mean_sigma": args.local_mean} if args.local_mean else {}),
        **({"noise_input": True} if args.noise_input else {}),
        **({"sigma_smoothing": True} if args.sigma_smoothing else {}),
    )
    torch.manual_seed(args.seed)  # the initial weights follow --seed (equal on every rank)
    if args.init:
        model = _init_model(
            args.init,
            args.kind,
            channels,
            global_pool=args.global_pool,
            upsample=args.upsample,
            downsample=args.downsample,
            z_downsample=args.z_downsample,
            padding=args.padding,
            local_mean_sigma=args.local_mean,
            sigma_smoothing=args.sigma_smoothing,
            ridge_mode=args.ridge_mode,
            groups=args.groups,
            group_start=args.group_start,
            **({"tile": args.tile, "tile_stride": args.tile_stride} if args.tile else {}),
        )
    elif kind == RIDGE_KIND:
        model = RidgeProx(
            in_channels=channels,
            filters=args.filters,
            kernel=args.kernel,
            dilations=dilations,
            slope_bound=args.slope_bound,
            mode=args.ridge_mode or "gradient-step",
            groups=args.groups or 0,
        )
    elif kind == "normalization-trick":
        model = NormalizationTrick(**arch)
    else:
        model = ConvLPN(
            kind=kind,
            act=args.act if kind in ("aelpn", "aelpn-global", "scale-only") else "smooth",
            **arch,
        )
    model = model.to(device)
    cfg = TrainConfig(
        sigma=args.sigma,
        sigma_max=args.sigma_max,
        sigma_sampling=args.sigma_sampling,
        steps=args.steps,
        batch=args.batch,
        l1_fraction=args.l1_fraction,
        gamma_unit=args.gamma_unit if args.gamma_unit is not None else 0.8 * args.sigma,
        loss=args.loss,
        lr_pm=args.lr,
        lr_schedule=args.lr_schedule,
        seed=args.seed,
        ckpt_every=args.ckpt_every,
        val_every=args.val_every,
        artifact_fraction=args.artifacts,
        contrast_min=args.contrast_min,
        fne_weight=args.fne_weight,
        fne_target=args.fne_target,
        fne_batch=args.fne_batch,
        fne_iters=args.fne_iters,
        fne_ramp=args.fne_ramp,
        fne_sigma_min=args.fne_sigma_min,
    )
    options = _result_options(args, mix)
    preset = _preset_from(args.init, init_meta)
    meta = {
        "equivariance": model.equivariance,
        "training_data": desc,
        "patch": args.patch,
        "seed": args.seed,
        **({"init": str(args.init)} if args.init else {}),
        **({"preset_from": preset} if preset else {}),
        "command": "recon train " + " ".join(sys.argv[2:]),
        "options": options,
    }
    if args.init and args.steps > 0:  # a fine-tune: the commands that made it, in order
        meta["stages"] = [*training_stages(init_meta), meta["command"]]
    if args.steps == 0:  # a conversion: the --init weights in the asked-for architecture
        if existing is not None and not args.no_resume:
            held = existing.get("train", {}).get("step")
            plural = "s" * (held != 1)
            what = f"a checkpoint of {held} training step{plural}" if held else "a checkpoint"
            raise ValueError(
                f"--out {args.out}: holds {what}; a --steps 0 conversion writes a new file: "
                "pass another --out, or --no-resume to overwrite it"
            )
        if rank == 0:  # the source's training record (σ, steps, stages) stays with its weights
            # but not what names the source file itself: an export's "exported_from" would let
            # the conversion pass for that run's export, which _check_export lets it replace
            source = {k: v for k, v in init_meta.items() if k not in SOURCE_FILE_META}
            conv = {"converted_from": str(args.init), "conversion": meta["command"]}
            if preset:
                conv["preset_from"] = preset
            save_checkpoint(args.out, model, {**source, **conv})
            done = {"kind": kind, "steps": 0, "checkpoint": str(args.out)}
            if args.export:
                export_weights(args.out, args.export)
                done["exported"] = str(args.export)
            print(json.dumps(done))
        return 0
    if existing is not None and not args.no_resume and "step" in existing["train"]:
        changes = _resume_conflicts(existing, options, cfg, model)
        if changes:
            done = existing["train"]["step"]
            why = (
                f"; it holds {done} steps, and more --steps resume only when those keep their "
                "learning rate and γ (e.g. --loss mse, --l1-fraction 0, a constant --lr-schedule)"
                if any(c.startswith("steps:") for c in changes)
                else ""
            )
            if any(c.startswith("data-files:") for c in changes):
                why += (
                    "; the image files under --data changed since that checkpoint (the held-out "
                    "validation files would change with them)"
                )
            raise ValueError(
                f"--out {args.out}: holds a training run with other options "
                f"({', '.join(changes)}){why}; pass a new --out, or --no-resume to start over"
            )
    try:
        res = train_prior(
            model,
            sampler,
            cfg,
            checkpoint=args.out,
            val=val,
            meta=meta,
            progress=not args.quiet,
            resume=not args.no_resume,
            pairs=pairs,
        )
    except TrainingInterrupted as exc:
        if rank == 0:
            print(_interrupted(args, exc), file=sys.stderr)
        exc.reported = True  # recon.cli then does not say "interrupted" a second time
        raise
    if rank != 0:  # rank 0 alone reports and exports
        return 0
    summary = {
        "kind": kind,
        "steps": res.steps,
        "seconds": round(res.seconds, 1),
        "seconds_per_step": round(res.seconds / max(res.steps, 1), 3),
        "final_val_psnr": res.history["val_psnr"][-1] if res.history.get("val_psnr") else None,
        "val_input_psnr": noisy_psnr(val, args.sigma) if val is not None else None,
        "val_psnr_data_range": "each validation patch's own max - min",
        "checkpoint": str(args.out),
    }
    if world > 1:
        summary["processes"] = world
    if args.export:
        export_weights(args.out, args.export)
        summary["exported"] = str(args.export)
    from recon.outputs import jsonable

    print(json.dumps(jsonable(summary)))  # valid JSON: a NaN PSNR prints as null
    return 0
