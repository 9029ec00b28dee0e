"""Keep freed memory in the process instead of handing it back to the OS (glibc's malloc).

One prox of a convolutional prior on a 512² slice allocates and frees about a hundred tensors
of 32–64 MiB. glibc serves every allocation above its mmap threshold (which can never exceed
32 MiB) with fresh pages from ``mmap`` and gives them back with ``munmap`` when freed, so the
next call faults the same gigabytes of zeroed pages in again: on a 2-core x86-64 machine,
about 880,000 minor page faults and 1.3–1.9 s of kernel time per ``aelpn-ct`` prox, as much
as the convolutions themselves (``recon bench speed``).

``retain_freed_memory()`` tells glibc to serve large blocks from its heap too (``M_MMAP_MAX``
= 0) and not to shrink the heap when blocks are freed (``M_TRIM_THRESHOLD``), so freed tensors
are reused without faults. The peak memory is unchanged; the process just keeps it until it
exits. ``recon`` calls it at start-up; set ``RECON_RETAIN_MEMORY=0`` to keep glibc's
defaults (a long-lived process that must return memory). A no-op where the C library is not
glibc (macOS, Windows, musl).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["glibc", "retain_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_MAX = -4
_TRIM_KEEP = 2**31 - 1  # bytes of free heap top kept (mallopt takes an int)


def glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (Linux), else None (musl's mallopt is a stub)."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt") else None


def retain_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse in this process (see the module docstring).

    Returns True when the setting took effect; False on another C library, when
    ``RECON_RETAIN_MEMORY=0`` is set, or when mallopt refused. Affects later allocations
    only; processes forked afterwards inherit it."""
    if os.environ.get("RECON_RETAIN_MEMORY", "1").strip() in ("0", "false", "no", "off"):
        return False
    libc = glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_KEEP))
