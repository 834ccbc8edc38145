"""Vigil's application layer: the ``vigil`` command line and its commands, the demo and the
handbook benchmark. Everything here is a thin adapter over the layers below."""
