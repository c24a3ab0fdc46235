"""Ready-made vertical applications built on slm bundles."""
