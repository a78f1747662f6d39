"""Byte layout of the shared-memory segments: the single source of truth.

Every offset and width below is used by the producer (``ai_analytics.client``) through
``struct``/``memoryview`` and by the daemon through a numpy dtype built from the same
constants. ``docs/ring-format.md`` explains the protocol; keep both in step.

All integers are little-endian. The producer packs with *native* struct formats (each field
copied whole, measurably faster than the standard-size ``<`` path); the import-time asserts
below pin native to little-endian and the offsets to the documented ones.

Lane segment ``<segment dir>/<namespace>.lane.<instance>.<serial>`` (``_segments``)::

    offset size field              written by
    ------ ---- ------------------ -----------------------------------------------
         0    8 magic              producer, last, once the rest of the header is set
         8    4 version            producer, at creation
        12    4 header_size        producer, at creation (HEADER_SIZE)
        16    4 record_size        producer, at creation (RECORD_SIZE)
        20    4 capacity           producer, at creation (records in the ring; 0: no ring)
        24    4 names_capacity     producer, at creation (entries in the name table)
        28    4 name_entry_size    producer, at creation (NAME_ENTRY_SIZE)
        32    4 pid                producer, at creation (in its own PID namespace)
        36    4 flags              producer, at creation (FLAG_OVERWRITE, FLAG_NO_RING)
        40    8 pid_start_ticks    producer, at creation (field 22 of /proc/PID/stat)
        48    8 created_ns         producer, at creation (CLOCK_REALTIME)
        56    8 thread_id          producer, at creation (native thread id)
    --- producer cache line ---
        64    8 head               producer: count of records published (one 8-byte store)
        72    8 dropped            producer: events refused because the ring was full
        80    8 names_count        producer: entries published in the name table
        88    8 retired            producer: 1 once the owning thread has ended
    --- consumer cache line ---
       128    8 tail               daemon: count of records consumed
       136    8 overwritten        daemon: records lapped before they could be read
       144    8 invalid            daemon: records rejected by validation
       152    8 consumer_pid       daemon: pid of the daemon that last drained the lane
    --- 160 ---
       160    8 pid_namespace      producer, at creation (inode of its PID namespace, 0 unknown)
    --- 168..255 reserved (zero) ---
       256      name table         names_capacity entries of NAME_ENTRY_SIZE bytes
         …      records            capacity records of RECORD_SIZE bytes

The producer holds an exclusive ``flock`` on the lane file from before its magic is
written until its thread ends (or the process dies, when the kernel drops it): that, not the
pid, is how the daemon tells a live producer from a dead one across PID namespaces.

A lane with ``FLAG_NO_RING`` is only a header (``STUB_SIZE`` bytes, capacity and
names_capacity 0): a thread that could not get a whole lane (a full segment directory)
counts in its ``dropped`` the events it had to refuse, so that they reach the daemon.

A name entry is one length byte (1..MAX_NAME_BYTES) followed by that many bytes of UTF-8.
Entry ``i`` holds the name whose id is ``i + 1``; id 0 is the empty string (no model), and
``NAME_ID_OVERFLOW`` marks a name that did not fit in a full table.

Record (RECORD_SIZE bytes) ``i`` lives at ``records + (i % capacity) * RECORD_SIZE``::

    offset size field       meaning
         0    8 seq         the record's index i, to detect stale or lapped slots
         8    8 ts_ns       time.monotonic_ns() at emit
        16    8 latency_ms  float64
        24    4 quality     float32, NaN = absent
        28    2 op_id       name id of the operation
        30    2 model_id    name id of the model (0 = none)
        32    1 success     0 or 1
        33    1 cache_hit   0 miss, 1 hit, 2 absent
        34    1 kind        KIND_BASIC (fields 36.. are stale), KIND_EXTENDED, or
                            KIND_CACHE_STATE: op_id names the cache, latency_ms holds its
                            size (NaN = not given), tokens_in the evictions since the
                            previous cache_state call of that cache
        35    1 (pad)
        36    4 ttft_ms     float32, NaN = absent           (KIND_EXTENDED only)
        40    4 queue_ms    float32, NaN = absent           (KIND_EXTENDED only)
        44    4 tokens_in   uint32, TOKENS_ABSENT = absent  (KIND_EXTENDED only)
        48    4 tokens_out  uint32, TOKENS_ABSENT = absent  (KIND_EXTENDED only)
        52   12 (reserved)

Control segment ``<segment dir>/<namespace>.control`` (written by the daemon, read by producers
when they create a lane)::

         0    8 magic        CONTROL_MAGIC
         8    4 version
        12    4 capacity     lane capacity new lanes should use
        16    4 flags        bit 0: on_full = overwrite
        20    4 names_capacity
        24    4 daemon_pid
        28    4 (pad)
"""

from __future__ import annotations

import struct
import sys

# 2: lanes named by instance token, flock liveness, pid_namespace, no-ring lanes.
VERSION = 2
LANE_MAGIC = int.from_bytes(b"AIALANE1", "little")
CONTROL_MAGIC = int.from_bytes(b"AIACTRL1", "little")

HEADER_SIZE = 256
RECORD_SIZE = 64
NAME_ENTRY_SIZE = 128
MAX_NAME_BYTES = NAME_ENTRY_SIZE - 1
NAME_ID_OVERFLOW = 0xFFFF

FLAG_OVERWRITE = 1
FLAG_NO_RING = 2

# Header offsets, in bytes.
OFF_MAGIC = 0
OFF_VERSION = 8
OFF_HEADER_SIZE = 12
OFF_RECORD_SIZE = 16
OFF_CAPACITY = 20
OFF_NAMES_CAPACITY = 24
OFF_NAME_ENTRY_SIZE = 28
OFF_PID = 32
OFF_FLAGS = 36
OFF_PID_START = 40
OFF_CREATED_NS = 48
OFF_THREAD_ID = 56
OFF_HEAD = 64
OFF_DROPPED = 72
OFF_NAMES_COUNT = 80
OFF_RETIRED = 88
OFF_TAIL = 128
OFF_OVERWRITTEN = 136
OFF_INVALID = 144
OFF_CONSUMER_PID = 152
OFF_PID_NAMESPACE = 160

# The same offsets as indexes into the header viewed as 8-byte words (memoryview.cast("Q")).
# Stores through such a view are single aligned 8-byte stores.
Q_MAGIC = OFF_MAGIC // 8
Q_HEAD = OFF_HEAD // 8
Q_DROPPED = OFF_DROPPED // 8
Q_NAMES_COUNT = OFF_NAMES_COUNT // 8
Q_RETIRED = OFF_RETIRED // 8
Q_TAIL = OFF_TAIL // 8
Q_OVERWRITTEN = OFF_OVERWRITTEN // 8
Q_INVALID = OFF_INVALID // 8
Q_CONSUMER_PID = OFF_CONSUMER_PID // 8
Q_PID_NAMESPACE = OFF_PID_NAMESPACE // 8

# Fixed header fields written once at creation (offset 8 up to head), native order.
HEADER_FIXED = struct.Struct("IIIIIIIIQQQ")
assert HEADER_FIXED.size == OFF_HEAD - OFF_VERSION

# Records. KIND_BASIC leaves the kind byte to the pad ("x" packs a zero byte), so the common
# path packs eight fields; the extended form packs the LLM-serving extras as well.
KIND_BASIC = 0
KIND_EXTENDED = 1
KIND_CACHE_STATE = 2  # cache_state(): size in latency_ms, evictions in tokens_in
TOKENS_ABSENT = 0xFFFFFFFF
CACHE_MISS, CACHE_HIT, CACHE_ABSENT = 0, 1, 2

RECORD_BASIC = struct.Struct("QQdfHHBBx")
RECORD_EXTENDED = struct.Struct("QQdfHHBBBxffII")

# (name, struct code, offset): the daemon builds its numpy dtype from this table.
RECORD_FIELDS: tuple[tuple[str, str, int], ...] = (
    ("seq", "Q", 0),
    ("ts_ns", "Q", 8),
    ("latency_ms", "d", 16),
    ("quality", "f", 24),
    ("op_id", "H", 28),
    ("model_id", "H", 30),
    ("success", "B", 32),
    ("cache_hit", "B", 33),
    ("kind", "B", 34),
    ("ttft_ms", "f", 36),
    ("queue_ms", "f", 40),
    ("tokens_in", "I", 44),
    ("tokens_out", "I", 48),
)

CONTROL = struct.Struct("QIIIII4x")
CONTROL_SIZE = CONTROL.size

# Defaults a producer uses when no daemon publishes a control segment.
DEFAULT_CAPACITY = 8192
DEFAULT_NAMES_CAPACITY = 256
MIN_CAPACITY = 16
MAX_CAPACITY = 1 << 24
MAX_NAMES_CAPACITY = NAME_ID_OVERFLOW - 1


def lane_size(capacity: int, names_capacity: int) -> int:
    """Total bytes of a lane segment with the given geometry."""
    return HEADER_SIZE + names_capacity * NAME_ENTRY_SIZE + capacity * RECORD_SIZE


STUB_SIZE = lane_size(0, 0)  # a no-ring lane: the header alone


def records_offset(names_capacity: int) -> int:
    """Byte offset of record 0 in a lane segment."""
    return HEADER_SIZE + names_capacity * NAME_ENTRY_SIZE


def _check_layout() -> None:
    # Native formats are only correct where native means little-endian with the documented
    # alignment; fail at import rather than write a format the daemon misreads.
    assert sys.byteorder == "little", "ai_analytics needs a little-endian machine"
    assert RECORD_BASIC.size == 35 and RECORD_EXTENDED.size == 52
    values = (1, 2, 3.5, 4.5, 5, 6, 7, 8, 9, 10.5, 11.5, 12, 13)
    probe = bytearray(RECORD_SIZE)
    RECORD_EXTENDED.pack_into(probe, 0, *values)
    for (name, code, offset), value in zip(RECORD_FIELDS, values, strict=False):
        got = struct.unpack_from("<" + code, probe, offset)[0]
        assert got == value, f"record field {name} is not at offset {offset}"
    assert CONTROL_SIZE == 32


_check_layout()
