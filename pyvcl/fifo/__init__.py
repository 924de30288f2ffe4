"""pyvcl.fifo: VPP's svm fifos and fifo-segment chunk allocator, in pure Python.

- `Fifo`: one ``svm_fifo_shared_t`` as producer and/or consumer (enqueue, dequeue, peek, drop,
  zero-copy reserve/commit and segments/drop) with its event and dequeue-notification signals;
- `Signals`: the signal words of a fifo header (separate for cut-through clients);
- `ChunkAllocator`: the segment's lock-free chunk free lists and bump allocator.
"""

from .chunks import ChunkAllocator, ChunkInfo, fl_index_for_size, fl_index_to_size
from .fifo import Fifo
from .signals import Signals

__all__ = [
    "ChunkAllocator",
    "ChunkInfo",
    "Fifo",
    "Signals",
    "fl_index_for_size",
    "fl_index_to_size",
]
