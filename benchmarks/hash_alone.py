"""The floor of a re-run: hashlib's SHA-256 over every file of a model, in a bare interpreter.

    python benchmarks/hash_alone.py MODEL_PATH

One 1 MiB buffer, one pass, no checks: what `model register` on a registered token cannot beat,
since it must hash the bytes to know they are the registered ones. `benchmarks/run.py --shape`
prints it beside the re-run's wall time.
"""

from __future__ import annotations

import hashlib
import os
import sys


def main(root: str) -> None:
    buffer = bytearray(1024 * 1024)
    view = memoryview(buffer)
    paths = (
        [root]
        if os.path.isfile(root)
        else sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names)
    )
    for path in paths:
        hasher = hashlib.sha256()
        with open(path, "rb", buffering=0) as handle:
            while read := handle.readinto(buffer):
                hasher.update(view[:read])


if __name__ == "__main__":
    main(sys.argv[1])
