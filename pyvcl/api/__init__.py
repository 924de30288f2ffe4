"""pyvcl.api."""
