"""The data gate: Great Expectations checks on the canonical tables before anything is trained on them."""
