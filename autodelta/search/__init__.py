"""The search: an Optuna study of quality against MACs, its spaces, families, samplers and storage."""
