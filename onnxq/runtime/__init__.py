"""onnxruntime sessions, evaluation metrics, latency benchmarking and per-node profiles."""

from __future__ import annotations

from .profile import ModelProfile, ProfileReport, profile_models
from .session import make_session, run_session, session_options

__all__ = ["make_session", "run_session", "session_options", "profile_models", "ProfileReport", "ModelProfile"]
