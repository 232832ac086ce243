"""The reference collector: receives native-protocol batches, verifies, dedupes and stores them.

Role: the far end of the ``tailseal`` sink (docs/protocol.md). ``server.py`` is the aiohttp
HTTPS server (``Collector``, ``serve``), ``batch.py`` decodes and verifies one batch without I/O,
``storage.py`` is the ``StreamStore`` interface and its file backend, ``index.py`` its seq index,
``ratelimit.py`` the per-token token buckets. ``verify.py`` (the engine) and ``report.py`` (the
CLI) are ``tailseal verify``, offline re-verification of stored streams; ``vectors.py`` generates
the chain test vectors in docs/test-vectors/.

Storage layout (``FileStreamStore``)::

    <storage_dir>/streams/<stream_id>/records.ndjson      record lines exactly as received, one per
                                                        line, append-only, seq 1..last_seq
    <storage_dir>/streams/<stream_id>/head.json           {stream, host, last_seq, head, bytes,
                                                        state, updated, gaps, client}; ``bytes`` is
                                                        how much of records.ndjson it covers
    <storage_dir>/streams/<stream_id>/index.bin           (seq, offset) every 1024 records;
                                                        derived, rebuilt when damaged (index.py)
    <storage_dir>/streams/<stream_id>/quarantine-<n>.bin  bytes cut off at offset n on recovery

Stream ids match ``[A-Za-z0-9-]{1,64}``, so a stream directory can never escape ``streams/``.

Durability: an append writes and fsyncs ``records.ndjson``, then replaces ``head.json`` atomically
(tmp, fsync, rename, fsync dir); the 200 ``{"acked", "head"}`` is sent only after both. A crash
can therefore leave records past ``head.bytes`` but never a head past its records. On first access
of a stream, complete lines past ``head.bytes`` that continue the chain are adopted (written,
maybe fsynced and acked; maybe not, if the process died before the fsync or it failed): the data
file is fsynced before the new head covers them, so nothing is acked that is not durable. A torn
or unverifiable tail is moved to a quarantine file and truncated.

Dedupe and linking, per stream, in this order: a malformed batch (bad header, bad JSON, seqs
not consecutive) gets 400. A batch that does not link gets 409 ``{"expected": last_seq + 1}``:
it starts beyond ``last_seq + 1``, or its chain value at ``last_seq`` (the header's ``prev_h``,
or the ``h`` of the overlapping record) is not the held head; a new stream must start at seq 1
from ``genesis(stream)``. A batch in which any record's ``h`` does not verify from ``prev_h``
gets 400 and nothing of it is stored. Records with seq <= the held ``last_seq`` are dropped; a
batch that is entirely held gets an idempotent 200 with the current head.

State per stream: ``last_seq``, ``head`` (hex h(last_seq)), ``host`` (from the latest batch
header), ``gaps`` (gap records held), ``client`` (mTLS certificate CN/SANs of the latest append),
``state`` (``sealed`` when the last stored record is a ``seal``, else ``gap`` when ``gaps`` > 0,
else ``live``; ``silent`` replaces ``gap``/``live`` in listings after ``silent_after`` seconds
without an append), ``updated``.

Ownership: the ``Collector`` (event-loop thread) owns the tokens (with their rate-limit
buckets) and one ``asyncio.Lock`` per stream that serializes check-then-append for that stream.
The ``FileStreamStore`` owns the files and a cache of heads and seq indexes, guarded by its own
per-stream locks; its file I/O runs in worker threads, and an append in progress always
completes even if the request that started it is cancelled.
"""
