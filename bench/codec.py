"""How fast is fedbus's binary codec next to copying the same bytes?

For one ArrayRecord holding a single float32 array of each size, this measures in one process:

- copy: the array's bytes copied into a fresh buffer (``bytearray(n)`` then a slice
  assignment), the least any encoder that produces a new buffer can do;
- encode: ``encode_message`` (one exact-size allocation, headers, one copy of the data);
- decode: ``decode_message`` of that frame (zero-copy: the arrays are views into the frame);
- encoded_size: the size computed without encoding, as the simulation does for each message.

Every figure is the best of N runs timed with ``time.perf_counter``. Targets: encode at least
0.7x the speed of the copy, and decode at least 20x faster than encode.

Where the fresh buffer's memory comes from decides what a copy costs. Before each size, a buffer
1 MiB larger is allocated and freed: glibc then serves the copies from reused heap memory, as in
a long-running process. Without it, a fresh process maps new pages for every buffer above
128 KiB and faults them in, which made the 1 MiB copy (and so encode) ~15x slower on the machine
this was written on. Above 32 MiB glibc always maps new pages, so the 100 MiB copy and encode
include page faults whatever is done.

Usage::

    python bench/codec.py [--sizes-mib 1 100] [--repeat 200]
"""

from __future__ import annotations

import argparse
import gc
import time
from collections.abc import Callable

import numpy as np

from fedbus.message import (
    ArrayRecord,
    Message,
    RecordDict,
    decode_message,
    encode_message,
    encoded_size,
)

ENCODE_VS_COPY_TARGET = 0.7  # encode speed / copy speed
DECODE_VS_ENCODE_TARGET = 20.0  # decode speed / encode speed


def best_time(run: Callable[[], object], repeat: int) -> float:
    """Seconds of the fastest of ``repeat`` runs (the least disturbed by the machine)."""
    gc.collect()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def measure(nbytes: int, repeat: int) -> dict[str, float]:
    values = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    # Freeing a mapped block raises glibc's threshold for serving blocks from the heap.
    warm_up = np.empty(nbytes + 2**20, np.uint8)
    del warm_up

    message = Message(RecordDict({"model": ArrayRecord({"weights": values})}), 1, "train")
    source = values.data.cast("B")

    def copy() -> bytearray:
        buffer = bytearray(nbytes)
        buffer[:] = source
        return buffer

    frame = encode_message(message)
    decoded = decode_message(frame).content.array_records["model"]["weights"].numpy()
    assert np.array_equal(decoded, values), "the decoded array differs from the original"
    assert np.shares_memory(decoded, np.frombuffer(frame, np.uint8)), "decode copied the data"
    del decoded
    # Decoding takes microseconds whatever the size, so it gets more runs to find its best.
    return {
        "copy": best_time(copy, repeat),
        "encode": best_time(lambda: encode_message(message), repeat),
        "decode": best_time(lambda: decode_message(frame), repeat * 20),
        "encoded_size": best_time(lambda: encoded_size(message), repeat * 20),
        "overhead": len(frame) - nbytes,
    }


def report(nbytes: int, times: dict[str, float]) -> bool:
    def speed(seconds: float) -> str:
        return f"{nbytes / seconds / 1e9:10.2f} GB/s"

    encode_vs_copy = times["copy"] / times["encode"]
    decode_vs_encode = times["encode"] / times["decode"]
    print(f"\n{nbytes / 2**20:g} MiB float32 array ({int(times['overhead'])} bytes of headers)")
    for name in ("copy", "encode", "decode"):
        print(f"  {name:<13}{times[name] * 1e6:12.1f} us {speed(times[name])}")
    print(f"  {'encoded_size':<13}{times['encoded_size'] * 1e6:12.1f} us")
    encode_ok = encode_vs_copy >= ENCODE_VS_COPY_TARGET
    decode_ok = decode_vs_encode >= DECODE_VS_ENCODE_TARGET
    print(
        f"  encode speed / copy speed   = {encode_vs_copy:8.2f}x  "
        f"(target >= {ENCODE_VS_COPY_TARGET}x: {'met' if encode_ok else 'MISSED'})"
    )
    print(
        f"  decode speed / encode speed = {decode_vs_encode:8.1f}x  "
        f"(target >= {DECODE_VS_ENCODE_TARGET:g}x: {'met' if decode_ok else 'MISSED'})"
    )
    return encode_ok and decode_ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mib", type=float, nargs="+", default=[1.0, 100.0])
    parser.add_argument("--repeat", type=int, default=200, help="runs per figure for 1 MiB")
    args = parser.parse_args()
    results = []
    for size in args.sizes_mib:
        nbytes = int(size * 2**20) // 4 * 4
        # Large copies take milliseconds each: fewer runs, same total time.
        repeat = max(5, int(args.repeat / max(1.0, size) ** 0.5))
        results.append(report(nbytes, measure(nbytes, repeat)))
    print("\nall targets met" if all(results) else "\nsome targets MISSED")


if __name__ == "__main__":
    main()
