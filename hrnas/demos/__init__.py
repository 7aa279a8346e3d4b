"""Demo commands and the synthetic data generators they use (the layer above the engine)."""
