"""Hatchway: run commands inside containers on remote machines."""

__version__ = "0.1.0"
