"""Federated evaluation: the clients evaluate the global model on their own data."""
