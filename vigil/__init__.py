"""Vigil: raw events to decisions served online, on a laptop or on Kubernetes."""

__version__ = "0.1.0"
