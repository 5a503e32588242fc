"""Shared pytest setup: the checker runs after every pass under tests."""

from __future__ import annotations

import os

os.environ.setdefault("ONNXQ_CHECK_PASSES", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
