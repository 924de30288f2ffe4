"""Sessions: the IO-free state machines (`core`) and the blocking adapter (`worker`)."""
