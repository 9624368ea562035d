"""Server side: the round loop, sampling, strategies, validation and checkpoints."""
