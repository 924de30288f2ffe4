"""Shared-memory segment headers: ``src/svm/ssvm.h`` and ``src/svm/fifo_types.h``.

A segment memfd starts with an ``ssvm_shared_header_t``; its ``opaque[0]`` is the offset of the
``fifo_segment_header_t`` ("fsh"), the origin of every offset VPP hands out for that segment.
The fsh is followed by ``n_slices`` ``fifo_segment_slice_t`` (one per VPP thread).
"""

from __future__ import annotations

from ._decl import Decl, Struct, array, fs_sptr_t, pad, pointer, u8, u32, uword

SSVM_SHARED_HEADER = Decl(
    "ssvm_shared_header_t",
    Struct(
        "lock" / u32,  # VPP-private spinlock
        "owner_pid" / u32,
        "recursion_count" / u32,
        "tag" / u32,
        "heap" / pointer,
        "ssvm_va" / uword,  # 0 in fifo segments: map anywhere
        "ssvm_size" / uword,
        "server_pid" / u32,
        "client_pid" / u32,
        "name" / pointer,
        "opaque" / array(7, pointer),  # opaque[0] = offset of the fifo segment header
        "ready" / u32,
        "type" / u32,  # SsvmSegmentType
    ),
)

FS_CHUNK_VEC_LEN = 11  # chunk sizes 4 KiB << 0..10; free_chunks[] and num_chunks[] length
FS_MIN_LOG2_CHUNK_SZ = 12  # smallest chunk is 1 << 12

FIFO_SEGMENT_SLICE = Decl(
    "fifo_segment_slice_t",
    Struct(
        # Tagged lock-free stack heads: low 48 bits offset, high 16 bits ABA tag.
        "free_chunks" / array(FS_CHUNK_VEC_LEN, fs_sptr_t),
        "free_fifos" / fs_sptr_t,  # VPP owner thread only
        "n_fl_chunk_bytes" / uword,
        "virtual_mem" / uword,
        "num_chunks" / array(FS_CHUNK_VEC_LEN, u32),
        pad(36),  # CLIB_CACHE_LINE_ALIGN_MARK: the slice is 64-byte aligned
    ),
)

FIFO_SEGMENT_HEADER = Decl(
    "fifo_segment_header_t",
    Struct(
        "n_cached_bytes" / uword,
        "n_active_fifos" / u32,
        "n_reserved_bytes" / u32,
        "max_log2_fifo_size" / u32,
        "n_slices" / u8,
        "pct_first_alloc" / u8,
        "n_mqs" / u8,
        pad(41),  # CLIB_CACHE_LINE_ALIGN_MARK (allocator)
        "byte_index" / uword,  # bump allocator cursor, CAS-updated by everyone
        "max_byte_index" / uword,
        "start_byte_index" / uword,
        pad(40),  # CLIB_CACHE_LINE_ALIGN_MARK (slice); slices follow at fsh + size
    ),
)

# Tagged free-list heads (fss_chunk_free_list_push/pop).
FREE_LIST_OFFSET_BITS = 48
FREE_LIST_OFFSET_MASK = (1 << FREE_LIST_OFFSET_BITS) - 1
FREE_LIST_TAG_ONE = 1 << FREE_LIST_OFFSET_BITS
FREE_LIST_TAG_MASK = ~FREE_LIST_OFFSET_MASK & 0xFFFFFFFFFFFFFFFF
