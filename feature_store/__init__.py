"""Feast repository of the fraud features, and the one feature definition (transforms)."""
