"""Secure aggregation: SecAgg+ masking, key agreement, secret sharing, integer encoding."""
