"""A tool pack for the kernel's own tests: one tool per behaviour the governed path must handle."""
