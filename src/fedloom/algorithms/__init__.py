"""Federated optimization beyond FedAvg: adaptive server optimizers, FedProx, SCAFFOLD, FedNova."""
