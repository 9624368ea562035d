"""Federated fine-tuning: which parameters train, are sent and aggregated."""
