"""Data stage: sources, the synthetic generator and the canonical tables."""
