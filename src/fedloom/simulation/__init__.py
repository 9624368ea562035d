"""Simulated devices: compute speed, bandwidth, availability, round deadlines."""
