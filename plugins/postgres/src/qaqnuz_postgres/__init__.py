"""Placeholder: filled in by the postgres plugin work."""
