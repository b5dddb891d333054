"""The caching methods autodelta is measured against, and the harness that runs them all alike."""
