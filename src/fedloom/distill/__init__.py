"""Federated distillation: clients with different architectures (``clients.models``),
fused by ensemble distillation at the server (FedDF) or sharing only class scores on a
public set (FedMD)."""
