"""The Δ-Cache runtime: a schedule installed on a diffusers transformer with hooks (``apply``)."""
