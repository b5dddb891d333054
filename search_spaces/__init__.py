"""Shipped search spaces (YAML), found with importlib.resources."""
