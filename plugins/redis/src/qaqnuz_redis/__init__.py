"""Placeholder: filled in by the redis plugin work."""
