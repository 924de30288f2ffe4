"""pyvcl.cli."""
