"""Giving freed memory back to the system between calibration passes (glibc only).

glibc's ``malloc`` raises its mmap threshold to the size of the largest block freed so far (up to
32 MiB): once one activation-sized array has been freed, later arrays of that size come from the
heap instead of their own mappings, and the heap keeps freed memory resident. Passes over the data
that each allocate a different set of activations (one tensor group after another) then leave
their predecessors' memory resident, freed but unused, and the process's peak grows with the number
of passes instead of staying at the largest one. ``malloc_trim(0)`` hands every free page back; its
cost is a re-fault of the pages the next pass touches, paid once per pass, not per sample.

Other C libraries (macOS, musl) return large blocks themselves; there this is a no-op.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable

__all__ = ["release_freed_memory"]


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc (or no C library found by name)
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_freed_memory() -> None:
    """Return the heap's free pages to the system (glibc's ``malloc_trim``; elsewhere nothing)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
