"""Blueprints: HTTP in, HTTP out."""
