"""Thin click adapters over the library functions; one module per command family."""
