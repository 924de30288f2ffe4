"""svm message queue structures: ``src/svm/message_queue.h``.

At an mq's offset: ``svm_msg_q_shared_t`` (n_rings), then the queue header
``svm_msg_q_shared_queue_t`` (glibc process-shared mutex + condvar, indices) followed by
``maxsize`` 8-byte ``svm_msg_q_msg_t`` handles, then each ring header
``svm_msg_q_ring_shared_t`` followed by ``nitems`` slots of ``elsize`` bytes, back to back.
"""

from __future__ import annotations

from ._decl import Bytes, Decl, Struct, array, pad, u32, u64
from .abi import PTHREAD_COND_SIZE, PTHREAD_MUTEX_SIZES

# The queue header as VPP lays it out on x86-64 (abi.py: aarch64's mutex is 8 bytes longer).
PTHREAD_MUTEX_SIZE = PTHREAD_MUTEX_SIZES["x86_64"]

SVM_MSG_Q_SHARED = Decl(
    "svm_msg_q_shared_t",
    Struct("n_rings" / u32, "pad" / u32),
    "Followed directly by the queue (svm_msg_q_shared_queue_t).",
)

SVM_MSG_Q_SHARED_QUEUE = Decl(
    "svm_msg_q_shared_queue_t",
    Struct(
        "mutex" / Bytes(PTHREAD_MUTEX_SIZE),
        "condvar" / Bytes(PTHREAD_COND_SIZE),
        "head" / u32,  # consumer index
        "tail" / u32,  # producer index
        "cursize" / u32,  # atomic
        "maxsize" / u32,
        "elsize" / u32,  # 8: one svm_msg_q_msg_t
        "pad" / u32,
    ),
    "Followed by maxsize message handles.",
)

SVM_MSG_Q_MSG = Decl(
    "svm_msg_q_msg_t",
    Struct("ring_index" / u32, "elt_index" / u32),
)

SVM_MSG_Q_RING_SHARED = Decl(
    "svm_msg_q_ring_shared_t",
    Struct(
        "cursize" / u32,  # atomic
        "nitems" / u32,
        "head" / u32,
        "tail" / u32,
        "elsize" / u32,
    ),
    "Followed by nitems slots of elsize bytes (unaligned).",
)

# glibc pthread internals the inspector shows (struct __pthread_mutex_s / __pthread_cond_s).
PTHREAD_MUTEX_FIELDS = Decl(
    "pthread_mutex_t",
    Struct(
        "__lock" / u32,
        "__count" / u32,
        "__owner" / u32,
        "__nusers" / u32,
        "__kind" / u32,
        pad(PTHREAD_MUTEX_SIZE - 20),
    ),
    "glibc x86_64 layout: __kind 144 = robust (16) | process-shared (128).",
)

PTHREAD_COND_FIELDS = Decl(
    "pthread_cond_t",
    Struct(
        "__wseq" / u64,
        "__g1_start" / u64,
        "__g_refs" / array(2, u32),
        "__g_size" / array(2, u32),
        "__g1_orig_size" / u32,
        "__wrefs" / u32,  # bit 0: process-shared (glibc >= 2.25 condvar)
        "__g_signals" / array(2, u32),
    ),
    "glibc >= 2.25 layout (struct __pthread_cond_s), 48 bytes.",
)
