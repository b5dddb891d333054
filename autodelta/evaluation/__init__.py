"""Scoring plans against full compute: the Evaluator protocol, real and synthetic evaluators, metrics,
the trajectory error model and the meter of item-generations."""
