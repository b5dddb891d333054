"""The version, in a module of its own: schedule files record it, and nothing below the package imports the package."""

__version__ = "0.1.0"
