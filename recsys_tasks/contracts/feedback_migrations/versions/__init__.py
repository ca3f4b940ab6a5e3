"""Revisions of the feedback store schema, oldest first."""
