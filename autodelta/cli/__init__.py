"""The ``autodelta`` command line: the app (parsing only) and one module per command."""
