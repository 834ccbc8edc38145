"""Evaluation of fraud scores: the handbook's metrics and the evaluation report."""
