"""Differential privacy: clipping, noise mechanisms, accountants, calibration, audit."""
