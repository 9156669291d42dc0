"""Gaussianity and temporal-coherence diagnostics (being written)."""
