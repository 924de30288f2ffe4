"""pyvcl.mq."""
