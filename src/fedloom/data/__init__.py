"""Datasets and their division among clients.

``load_federated(cfg, num_clients, seed)`` gives a ``FederatedDataset`` for a named
dataset; ``federate_tensors`` does the same for the user's own tensors, and
``partition`` exposes the split schemes on their own."""
