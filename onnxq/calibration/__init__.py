"""Calibration for static quantization: range observers, calibrated ranges and quantization parameters."""
