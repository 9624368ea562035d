"""Robust aggregation and simulated attacks."""
