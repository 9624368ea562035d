"""Tiny shared vocabulary imported by every layer: tensors dicts, messages, errors, seeding,
the component registry. Import each name from its module (``fedloom.core.errors``, ...)."""
