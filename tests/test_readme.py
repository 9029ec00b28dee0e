"""The README's Python API example runs as written."""

import re
from pathlib import Path


def test_readme_python_example_runs():
    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "the README has no Python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)  # noqa: S102 (our own README)
    assert scope["result"].iterations > 0


def test_api_is_the_set_up_recon_ct_runs(tmp_path):
    """ct_problem + solve on the bundled slice give recon ct's image and PSNR to the bit: one
    CT problem set-up, one set of presets."""
    import json

    import numpy as np

    from data.bundled import load_bundled
    from recon.api import ct_problem, solve
    from recon.cli import main

    sl = load_bundled("ct-small")
    args = ["--views", "30", "--noise", "0.02", "--seed", "3", "--iters", "5"]
    for solver, prior in (("pnp-admm", "ridge-ct"), ("tv", None)):
        out = tmp_path / solver
        cmd = ["ct", "--input", "bundled:ct-small", *args, "--solver", solver, "--quiet"]
        assert main(cmd + (["--prior", prior] if prior else []) + ["--out", str(out)]) == 0
        pb = ct_problem(sl.hu, views=30, noise=0.02, seed=3, pixel_size=sl.pixel_spacing[0])
        r = solve(pb, solver=solver, prior=prior, iters=5)
        assert np.array_equal(r.image, np.load(out / "recon.npy"))
        assert r.psnr == json.loads((out / "metrics.json").read_text())["psnr"]


def test_api_is_the_set_up_recon_mri_runs(tmp_path):
    """mri_problem + solve on the bundled brain slice give recon mri's image and PSNR to the
    bit, for TV and for PnP-ADMM with the default prior; the CLI's --prior defaults are the
    API's."""
    import json

    import numpy as np

    from data.bundled import load_bundled
    from recon.api import DEFAULT_PRIOR, mri_problem, solve
    from recon.cli import build_parser, main

    img = load_bundled("brain-t1")
    args = ["--coils", "4", "--accel", "4", "--center-fraction", "0.08", "--seed", "2"]
    for solver in ("tv", "pnp-admm"):
        out = tmp_path / solver
        cmd = ["mri", "--input", "bundled:brain-t1", *args, "--iters", "4", "--solver", solver]
        assert main([*cmd, "--quiet", "--out", str(out)]) == 0
        pb = mri_problem(img, coils=4, accel=4, center_fraction=0.08, seed=2)
        r = solve(pb, solver=solver, iters=4)
        assert np.array_equal(r.image, np.load(out / "recon.npy"))
        assert r.psnr == json.loads((out / "metrics.json").read_text())["psnr"]
    parser = build_parser()
    for modality in ("ct", "mri"):
        ns = parser.parse_args([modality, "--input", "x", "--out", str(tmp_path / "x")])
        assert ns.prior == DEFAULT_PRIOR[modality]


def test_readme_commands_parse():
    """Every `recon ...` line of the README's shell blocks is a command `recon` accepts (its
    options exist and take the values shown), so a new user's first copy-paste runs."""
    import shlex

    from recon.cli import build_parser

    text = (Path(__file__).parent.parent / "README.md").read_text()
    lines = [
        ln.split("#")[0].strip()
        for block in re.findall(r"```bash\n(.*?)```", text, re.S)
        for ln in block.splitlines()
        if ln.startswith(".venv/bin/recon ")
    ]
    assert len(lines) >= 6
    parser = build_parser()
    for ln in lines:
        parser.parse_args(shlex.split(ln)[1:])  # argparse exits (SystemExit) on a bad option
