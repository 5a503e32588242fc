"""onnxruntime sessions, evaluation metrics and latency benchmarking."""

from __future__ import annotations

from .session import make_session, run_session, session_options

__all__ = ["make_session", "run_session", "session_options"]
