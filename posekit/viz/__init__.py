"""Visualisation: overlays, contact sheets, curves."""
