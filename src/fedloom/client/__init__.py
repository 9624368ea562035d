"""Client side: local training and the fit of one round."""
