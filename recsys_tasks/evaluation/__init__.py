"""Evaluate stage: full-ranking leave-one-out metrics for the model, baselines and the champion."""
