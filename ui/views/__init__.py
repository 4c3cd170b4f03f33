"""Workbench pages: each module has ``render()``."""
