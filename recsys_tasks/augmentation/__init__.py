"""Augment stage: chronological sequences, leave-one-out splits and self-supervised views."""
