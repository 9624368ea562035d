"""Networked federation over gRPC: server and client processes."""
