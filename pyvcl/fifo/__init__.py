"""pyvcl.fifo."""
