"""``python -m autodelta``: the same CLI as the ``autodelta`` command (handy where scripts are not on PATH)."""

from autodelta.cli.app import main

main()
