"""Shipped model profiles (YAML) and the weights and classifiers of the proxy models, found with importlib.resources."""
