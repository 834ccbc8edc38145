"""Monitoring: metric declarations (:mod:`monitoring.metrics`), alert rules, dashboards, drift."""
