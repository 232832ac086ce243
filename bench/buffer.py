"""Buffer write throughput: appends/s and MB/s for fixed-size records.

    python -m bench.buffer [--records 500000] [--size 200] [--fsync batch] [--batch 1000]

Measures the real Buffer (chain hashing, framing, write, fsync per group commit) on a state
directory under --dir (default: a temporary directory on the same disk as the repo). A
producer task emits batches as a source would; the clock stops when the last record is
durable. Reported: wall time, records/s, MB/s of record payload and of bytes on disk, fsyncs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from pathlib import Path

from agent.buffer.wal import Buffer, SegmentIO
from agent.config import BufferConfig
from agent.sources import Checkpoint, Pending


class CountingIO(SegmentIO):
    def __init__(self) -> None:
        self.fsyncs = 0

    def fsync(self, fd: int) -> None:
        self.fsyncs += 1
        super().fsync(fd)


async def run(records: int, size: int, fsync: str, batch: int, directory: Path) -> dict[str, float]:
    config = BufferConfig(fsync=fsync, max_bytes=1 << 40)  # type: ignore[arg-type]
    io = CountingIO()
    buffer = await asyncio.to_thread(Buffer.open, directory, config, ["bench"], io)
    writer = asyncio.create_task(buffer.run())
    # A record as a source makes it: ts, src, msg (padded to `size` bytes of JSON), log.
    base = {"ts": "2026-11-21T10:00:00.000000Z", "src": "bench", "log": {"offset": 0}}
    pad = max(0, size - len(json.dumps({**base, "msg": ""})) - 20)
    start = time.perf_counter()
    for first in range(0, records, batch):
        items = [
            Pending({**base, "msg": f"{n:012d} " + "x" * pad}, Checkpoint("bench", "k", n))
            for n in range(first, min(records, first + batch))
        ]
        await buffer.emit(items)
    async with buffer.changed:
        await buffer.changed.wait_for(lambda: buffer.last_seq >= records)
    elapsed = time.perf_counter() - start
    await buffer.close("bench")
    await writer
    await asyncio.to_thread(buffer.stop)
    return {
        "records": records,
        "seconds": round(elapsed, 3),
        "records_per_s": round(records / elapsed),
        "payload_mb_per_s": round(records * size / elapsed / 1e6, 1),
        "disk_mb_per_s": round(buffer.stats.bytes / elapsed / 1e6, 1),
        "fsyncs": io.fsyncs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=500_000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--fsync", default="batch", choices=["batch", "always", "interval"])
    parser.add_argument("--batch", type=int, default=1000, help="records per emit (a read chunk)")
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(dir=args.dir, prefix="tailseal-bench-"))
    try:
        result = asyncio.run(run(args.records, args.size, args.fsync, args.batch, directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps({"fsync": args.fsync, "size": args.size, **result}))


if __name__ == "__main__":
    main()
