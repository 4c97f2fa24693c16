"""The version of aimass (a module of its own, so lower layers need not import the package)."""

__version__ = "0.1.0"
