"""svm fifo structures shared with VPP: ``src/svm/fifo_types.h``.

``svm_fifo_shared_t`` is 64-byte aligned and spans three cache lines: the shared part (chunk
list ends, size, signals), the consumer's (``head``) and the producer's (``tail``).  Data lives
in ``svm_fifo_chunk_t`` chunks linked by offsets from the segment's fifo header.
"""

from __future__ import annotations

from ._decl import Decl, Struct, array, fs_sptr_t, pad, u8, u32

SVM_FIFO_MAX_EVT_SUBSCRIBERS = 7

SVM_FIFO_SHARED = Decl(
    "svm_fifo_shared_t",
    Struct(
        "start_chunk" / fs_sptr_t,  # consumer unlinks from here
        "end_chunk" / fs_sptr_t,  # producer appends here
        "min_alloc" / u32,
        "size" / u32,  # capacity; VPP may retune it, always re-read
        "slice_index" / u8,
        pad(7),
        "next" / fs_sptr_t,  # VPP's free-list link
        # svm_fifo_signals_t (an anonymous union with the same fields)
        "has_event" / u32,
        "want_deq_ntf" / u32,
        "has_deq_ntf" / u32,
        "n_subscribers" / u8,
        "subscribers" / array(SVM_FIFO_MAX_EVT_SUBSCRIBERS, u8),
        "deq_thresh" / u32,
        # consumer cache line
        "head_chunk" / fs_sptr_t,
        "head" / u32,
        pad(52),
        # producer cache line
        "tail_chunk" / fs_sptr_t,
        "tail" / u32,
        pad(52),
    ),
)

SVM_FIFO_CHUNK = Decl(
    "svm_fifo_chunk_t",
    Struct(
        "start_byte" / u32,  # fifo position of data[0]
        "length" / u32,  # data bytes, a power of two >= 4096
        "next" / fs_sptr_t,
        "enq_rb_index" / u32,  # VPP rb-tree node indices: 0 (RBTREE_TNIL_INDEX) when we link
        "deq_rb_index" / u32,
    ),
    "Chunk header; data bytes follow at offset `size` (24).",
)

CHUNK_DATA_OFFSET = SVM_FIFO_CHUNK.size
