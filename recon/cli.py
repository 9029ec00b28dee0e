"""The `recon` command line: `recon info | train | ct | mri | bench`.

Exit status: 0 on success, 2 on bad input (a one-line message naming what is wrong), 1 on an
unexpected failure.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import sys

from recon import __version__
from recon.memory import retain_freed_memory

SUBCOMMANDS = (
    "recon.train",
    "recon.ct",
    "recon.mri",
    "recon.bench",
    "recon.tune",
    "recon.batch",
    "recon.prior",
)


def _info(_: argparse.Namespace) -> int:
    import astra
    import sigpy
    import torch

    from priors.checkpoint import shipped_priors

    print(f"pnp-recon {__version__}")
    print(f"python    {platform.python_version()}")
    print(f"torch     {torch.__version__}  (CUDA available: {torch.cuda.is_available()})")
    print(f"astra     {astra.__version__}  (CUDA: {astra.use_cuda()})")
    print(f"sigpy     {sigpy.__version__}")
    print("priors    " + (", ".join(shipped_priors()) or "(none shipped)") + ", tv")
    return 0


class _Parser(argparse.ArgumentParser):
    """One line for a bad option (``recon ct: error: argument --noise: ...``, exit 2), as for
    every other bad input; ``-h`` shows the usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="recon", description="PnP CT/MRI reconstruction with AE-LPN priors")
    parser.add_argument("--version", action="version", version=f"pnp-recon {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an unexpected failure"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser(
        "info",
        help="versions, devices and shipped priors",
        description="Print the versions of pnp-recon, torch, ASTRA and SigPy, the devices torch "
        "sees, and the shipped priors with what each is for.",
    ).set_defaults(func=_info)
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.add_parser(sub)
        sub.choices[name.split(".")[1]].set_defaults(func=mod.run)
    return parser


# subcommands whose --out is a results folder (train's is a checkpoint file; ct, mri and batch
# check theirs with their inputs)
FOLDER_OUT = ("bench", "tune")


def _check_outputs(args: argparse.Namespace) -> None:
    """Before any work: a results folder that cannot be written, and tune's --preset file, are
    refused (they used to fail with a traceback, --preset after the whole search)."""
    from recon.outputs import prepare_out_dir

    if args.command == "tune":
        from recon.tune import out_dir

        prepare_out_dir(out_dir(args))
    elif args.command in FOLDER_OUT and getattr(args, "out", None):
        prepare_out_dir(args.out)
    preset = getattr(args, "preset", None) if args.command == "tune" else None
    if preset:
        from pathlib import Path

        if Path(preset).is_dir():
            raise ValueError(f"--preset {preset}: a folder; give a .json file path")
        prepare_out_dir(Path(preset).parent, option=f"--preset {preset}: its folder")


OWN_PACKAGES = ("recon", "data", "operators", "priors", "solvers")


def is_own_file(filename: str) -> bool:
    """Whether ``filename`` (where a warning was raised) is in this project's packages."""
    from pathlib import Path

    roots = [Path(importlib.import_module(m).__file__).resolve().parent for m in OWN_PACKAGES]
    where = Path(filename).resolve()
    return any(where.is_relative_to(r) for r in roots)


def _one_line_warnings(name: str):
    """A ``warnings.formatwarning`` printing this project's warnings as ``recon NAME: warning:
    MESSAGE`` (one line, no source line); others keep Python's format."""
    import warnings

    default = warnings.formatwarning

    def fmt(message, category, filename, lineno, line=None) -> str:
        if is_own_file(filename):
            return f"recon {name}: warning: {message}\n"
        return default(message, category, filename, lineno, line)

    return fmt


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports torch and friends: seconds, a Ctrl-C lands here
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # -h, --version, or a bad option (already reported)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    retain_freed_memory()  # large tensors reused without page faults (recon.memory)
    name = " ".join(x for x in (args.command, getattr(args, "bench", None)) if x)  # bench grid
    import warnings

    before, warnings.formatwarning = warnings.formatwarning, _one_line_warnings(name)
    try:
        _check_outputs(args)
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"recon {name}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        print(
            f"recon {name}: error: out of memory (a smaller --size, slice or batch?)",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt as exc:
        if not getattr(exc, "reported", False):  # a command may have said what it left
            print(f"recon {name}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an unexpected failure: one line, the traceback on request
        if args.debug:
            raise
        print(
            f"recon {name}: unexpected error: {type(exc).__name__}: {exc} "
            "(rerun with recon --debug ... for the traceback)",
            file=sys.stderr,
        )
        return 1
    finally:
        warnings.formatwarning = before


if __name__ == "__main__":
    sys.exit(main())
