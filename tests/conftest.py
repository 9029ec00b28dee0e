"""Test-session set-up shared by every test module.

Under pytest-xdist (``make test`` runs ``pytest -n auto``) each worker gets its share of the
cores for torch's intra-op threads, so that two workers on two cores do not each spin two
OpenMP threads against the other.
"""

import os

import torch

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _workers > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _workers))
