"""The disk buffer: a write-ahead log between sources and sinks.

On-disk layout (``state_dir/buffer/``, mode 0700, files 0600)::

    lock                       flock'ed by the running agent: a second agent on the dir fails
    stream.json                {"stream_id", "created"}: the stream this buffer's records form
    00000000000000000001.seg   segment files named by the first seq they hold
    cursors/<sink>.json        {"acked": seq, "h": hex}: what the sink's collector holds
    checkpoints.json           summary of deleted segments: base_seq/base_h and the source
                               checkpoints as of the deletion

Frame format (``segment.py``): ``u32 len | u32 crc32 | u64 seq | h[32] | u16 cp_len | cp | record``.
The checkpoint (``cp``) is the source position the record advances, committed in the same frame
(DESIGN.md contract 2): there is no window between "record durable" and "position saved", so a
crash can never re-read a line that already has a seq. A checkpoint with the source, key and
path of the one before it in the same write is written compact, as its offset's digits
(``cp_len``'s top bit). The record is stored bare, its canonical JSON without ``h`` (the seq
word's top bit), and read back in its wire form with the ``h`` of the frame's head. Agents
before these formats misread both: no downgrade over a buffer that holds records.

Write rules: a single writer task assigns ``seq`` and the chain hash ``h`` and group-commits
(``fsync = "batch"``: one write + fsync per commit of up to ``max_commit_records``; ``"always"``:
one fsync per record). A segment is closed when the next frame would pass ``segment_bytes``.
Metadata (last seq, chain head, checkpoints, committed sizes) is published only after the fsync.

Ack and deletion rules: a sink's cursor is written atomically after its collector acknowledged
(fsynced) a batch. A segment is deleted when every sink's cursor is at or past its last seq and it
is not the active segment; ``checkpoints.json`` is made durable first, so no source position is
ever lost with its frames.

Recovery rules (``Buffer.open``): a torn final frame of the last segment (short, or a checksum
failure that reaches end of file) is truncated. A complete frame with a bad checksum, a frame
whose checksum holds but that does not read (its checkpoint or bare record), even the last one,
or a torn frame in an earlier segment, is corruption: the rest of the log from there is moved
aside as ``.bad`` files and a ``gap`` record accounts for it. A missing or unreadable cursor
falls back to the oldest record still held (re-send, never skip). A cursor ahead of the log
(records lost here that the collector already holds) moves the chain on to it, so no seq is ever
reused.

Sinks read committed records back from the segment files (``reader.py``); the writer keeps no
copy of them in memory.
"""
