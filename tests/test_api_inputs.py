"""recon.api's inputs: what a script may hand to ``ct_problem``, ``mri_problem`` and ``solve``,
and the one-line errors (or warnings) for what it cannot mean."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from data.fastmri import simulate_multicoil
from data.peer_mri import rss_center
from data.phantoms import shepp_logan
from recon import api


@pytest.fixture(scope="module")
def kspace():
    k, _, _ = simulate_multicoil(shepp_logan(96).astype(np.float32), 4, 0)
    return k.astype(np.complex64)


def test_fully_sampled_kspace_is_scored_against_its_rss(kspace):
    """k-space without a reference: fastMRI's reference (the RSS of its coil images), so PSNR is
    a number; the zero-filled image of an undersampled scan scores below a solver's."""
    pb = api.mri_problem(kspace, accel=4, center_fraction=0.16)
    np.testing.assert_allclose(pb.reference, rss_center(kspace, (96, 96)), rtol=1e-6)
    zf = api.solve(pb, "zero-filled")
    tv = api.solve(pb, "tv", iters=30)
    assert np.isfinite(zf.psnr) and tv.psnr > zf.psnr + 3


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda k: np.abs(k), "is complex"),  # a real stack is not k-space
        (lambda k: np.moveaxis(np.tile(k, (1, 1, 1)), 0, -1)[:, :, :4], "moveaxis"),
    ],
)
def test_arrays_that_are_not_kspace_are_refused(kspace, make, match):
    with pytest.raises(ValueError, match=match):
        api.mri_problem(make(kspace))


def test_an_mri_solver_name_is_checked_with_the_list(kspace):
    pb = api.mri_problem(kspace, accel=4, center_fraction=0.16)
    with pytest.raises(ValueError, match="zero-filled"):
        api.solve(pb, "fbp")


def test_ct_problem_refuses_noise_outside_its_range():
    """noise is a fraction of the sinogram's largest value: 1e9 (or a negative one) is a
    mistake, refused before any projection."""
    image = np.zeros((16, 16), np.float32)
    image[4:12, 4:12] = 1.0
    for bad in (1e9, -0.1):
        with pytest.raises(ValueError, match=f"noise={bad}: a fraction"):
            api.ct_problem(image, views=8, noise=bad, units="a.u.")


def test_ct_problem_refuses_scan_settings_that_disagree_with_its_op():
    """``op`` fixes the scan: views, arc, geometry or pixel size given with it and different
    from the op's were ignored (a fan op with geometry='parallel' ran as fan); now refused by
    name. The op's own values, or none, are accepted, and so is the op's image size only."""
    from operators.ct import CTOperator

    image = np.zeros((32, 32), np.float32)
    image[8:24, 8:24] = 0.5
    op = CTOperator(32, views=12, geometry="fan", pixel_size=0.5)
    for bad, match in [
        ({"views": 10}, "views=10 with op=.*has views=12"),
        ({"arc": 45}, "arc=45 with op=.*has arc=360"),
        ({"geometry": "parallel"}, "geometry='parallel' with op=.*has geometry='fan'"),
        ({"pixel_size": 1.0}, "pixel_size=1.0 with op=.*has pixel_size=0.5"),
    ]:
        with pytest.raises(ValueError, match=match):
            api.ct_problem(image, units="a.u.", op=op, **bad)
    pb = api.ct_problem(image, units="a.u.", op=op, views=12, arc=360, geometry="fan")
    assert pb.op is op and tuple(pb.y.shape) == (1, *op.range_shape)
    # numpy scalars equal to the op's own values are the same values
    api.ct_problem(image, units="a.u.", op=op, views=np.int64(12), pixel_size=np.float32(0.5))
    with pytest.raises(ValueError, match=r"op: a projector for images of shape \(32, 32\)"):
        api.ct_problem(np.pad(image, 4), units="a.u.", op=op)
    # without an op the defaults are those documented: 60 parallel views, pixel size 1
    plain = api.ct_problem(image, units="a.u.").op
    assert (plain.views, plain.geometry, plain.arc, plain.pixel_size) == (60, "parallel", 180, 1)


def test_ct_problem_says_what_is_wrong_with_an_image_or_a_device(monkeypatch):
    """A NaN pixel is named as such (not as a shape), a 3-D array by its shape, and CUDA without
    a CUDA device is a ValueError before any work (torch raised an AssertionError inside)."""
    image = np.zeros((16, 16), np.float32)
    image[2, 3] = np.nan
    with pytest.raises(ValueError, match=r"holds 1 NaN or infinite value\(s\)"):
        api.ct_problem(image, units="a.u.")
    with pytest.raises(ValueError, match=r"expected a 2-D image \(H, W\), got shape \(2, 16, 16\)"):
        api.ct_problem(np.zeros((2, 16, 16)), units="a.u.")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda': no CUDA device is available"):
        api.ct_problem(np.ones((16, 16)), units="a.u.", device="cuda")
    with pytest.raises(ValueError, match="device='gpu': not a torch device"):
        api.ct_problem(np.ones((16, 16)), units="a.u.", device="gpu")


@pytest.mark.parametrize(
    ("kwargs", "says"),
    [
        ({"config": "/no/such.json"}, "config='/no/such.json': no such file"),
        ({"strength": -1.0}, "strength must be > 0, got -1.0"),
        ({"iters": 0}, "iters must be a whole number >= 1, got 0"),
        ({"tol": -1.0}, "tol must be >= 0, got -1.0"),
        ({"prior": "ridge-mri"}, "prior='ridge-mri': made for"),
    ],
)
def test_solve_errors_name_the_keyword_not_the_cli_flag(kwargs, says):
    """`recon ct` and ``solve`` share their checks (``recon.pipeline``), whose messages name the
    CLI's flags; ``solve`` says them with its keyword arguments instead."""
    image = np.zeros((16, 16), np.float32)
    image[4:12, 4:12] = 0.5
    pb = api.ct_problem(image, units="a.u.", views=6)
    with pytest.raises(ValueError) as info:
        api.solve(pb, **{"iters": 2, **kwargs})
    assert says in str(info.value)
    assert "--" not in str(info.value) and "parameter '" not in str(info.value)


def test_keyword_message_leaves_other_flags_and_config_keys_alone():
    msg = "--solver pnp-pgd needs a --prior (or --prior-sigma-rel); parameter 'rho_rel' must be"
    assert api.keyword_message(msg, {"iters": None}) == (
        "solver='pnp-pgd' needs a prior= (or --prior-sigma-rel); parameter 'rho_rel' must be"
    )


def test_solve_warns_about_keywords_its_solver_does_not_read_and_says_what_ran(kspace):
    """'fbp' reads no iteration setting and no prior, 'tv' no prior: those keywords used to be
    dropped without a word. ``params`` names the solver asked and the algorithm that ran (the
    MRI default with ridge-mri is PGD with momentum: PnP-FISTA)."""
    image = np.zeros((16, 16), np.float32)
    image[4:12, 4:12] = 0.5
    pb = api.ct_problem(image, units="a.u.", views=6)
    with pytest.warns(UserWarning, match=r"prior, iters not used by solver='fbp'"):
        fbp = api.solve(pb, "fbp", prior="crr-ct", iters=3)
    assert fbp.params["solver"] == fbp.params["algorithm"] == "fbp"
    with pytest.warns(UserWarning, match=r"start not used by solver='fbp'"):
        api.solve(pb, "fbp", start=pb.x0)
    with pytest.warns(UserWarning, match=r"prior not used by solver='tv' \(TV is its"):
        tv = api.solve(pb, "tv", prior="crr-ct", iters=2)
    assert (tv.params["solver"], tv.params["algorithm"]) == ("tv", "pnp-admm")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # what each solver reads: no warning
        admm = api.solve(pb, "pnp-admm", prior="crr-ct", iters=2, tol=0.0, strength=2.0)
        assert api.solve(pb, "tv", prior="tv", iters=2).params["solver"] == "tv"
        mri = api.solve(api.mri_problem(kspace, accel=4, center_fraction=0.16), iters=2)
    assert (admm.params["solver"], admm.params["algorithm"]) == ("pnp-admm", "pnp-admm")
    assert (mri.params["solver"], mri.params["algorithm"]) == ("pnp-pgd", "pnp-fista")


def test_a_warm_start_in_the_inputs_units_goes_through_from_units():
    """``start`` is in internal units (u = (HU + 1000)/2500 for HU): ``from_units`` is the
    inverse of ``to_units``, so a result's image in HU becomes the internal image it came from."""
    image = np.full((24, 24), -1000.0, np.float32)
    image[6:18, 6:18] = 40.0  # soft tissue in air, HU
    pb = api.ct_problem(image, views=8)
    assert pb.units == "HU"
    first = api.solve(pb, "tv", iters=3)
    start = pb.from_units(first.image)
    assert start.shape == first.x.shape and start.dtype == torch.float32
    torch.testing.assert_close(start, first.x.float(), atol=1e-6, rtol=0)
    torch.testing.assert_close(pb.from_units(image), pb.x_true, atol=1e-7, rtol=0)
    again = api.solve(pb, "tv", iters=3, start=start)
    assert np.isfinite(again.psnr)
    with pytest.raises(ValueError, match=r"expected an image of shape \(24, 24\)"):
        pb.from_units(image[:20])


def test_auto_units_warns_when_an_image_read_as_au_goes_negative():
    """An HU crop inside the body (fat at −80 HU, no air) has no value below −100, so 'auto' reads
    it as a.u.; its negative values (attenuation never is) get a warning naming units='HU'.
    An a.u. image with FBP-like dips of 1 % of its peak, and one read as HU, get none."""
    hu_crop = 40.0 + 60.0 * shepp_logan(32)  # soft tissue and denser ellipses, in HU
    hu_crop[:4, :] = -80.0  # a band of fat
    with pytest.warns(UserWarning, match=r"goes down to -80.*units='HU'"):
        assert api.auto_units(hu_crop) == "a.u."
    au = shepp_logan(32).astype(np.float64)
    au[0, 0] = -0.01 * au.max()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert api.auto_units(au) == "a.u."
        assert api.auto_units(hu_crop - 1000.0) == "HU"
        assert api.ct_problem(hu_crop - 1000.0, views=8).units == "HU"
    with pytest.warns(UserWarning, match="units='HU'"):
        assert api.ct_problem(hu_crop, views=8).units == "a.u."
