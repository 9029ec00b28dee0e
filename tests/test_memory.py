"""recon.memory: freed large blocks are reused without faulting their pages in again."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from recon.memory import glibc

_CHILD = r"""
import json, resource, sys
import numpy as np
if sys.argv[1] == "retain":
    from recon.memory import retain_freed_memory
    assert retain_freed_memory()
n = 64 * 2**20 // 8  # 64 MiB: above glibc's largest mmap threshold
def cycle():
    a = np.empty(n)
    a[:] = 1.0  # touch every page
    del a
cycle()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(4):
    cycle()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0}))
"""

_PAGES = 4 * 64 * 2**20 // 4096  # pages touched by the four measured cycles (4 KiB pages)


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True,
                         check=True)  # fmt: skip
    return json.loads(out.stdout)["faults"]


@pytest.mark.skipif(
    glibc() is None,
    reason="not glibc (Linux): retain_freed_memory is a no-op "
    "with other C libraries (macOS, Windows, musl), so there is nothing to test",
)
def test_freed_blocks_are_reused_without_page_faults():
    # glibc's default: each 64 MiB block is mmap'd afresh, so every touched page faults again
    # (huge pages, where the kernel uses them, cut the count by up to 512, hence the / 1024)
    default = _faults("default")
    assert default > _PAGES / 1024
    # retained: the second and later blocks reuse the heap's pages
    assert _faults("retain") < min(default / 10, _PAGES / 100)


def test_opt_out(monkeypatch):
    from recon.memory import retain_freed_memory

    monkeypatch.setenv("RECON_RETAIN_MEMORY", "0")
    assert retain_freed_memory() is False
