"""Routers, one per function."""
