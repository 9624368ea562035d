"""Moving Messages between server and clients. No model code lives here."""
