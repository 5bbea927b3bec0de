"""Reading a small text file an operator names (``--config``, ``--jwks-file``): a regular
file, at most a bounded size, UTF-8. A FIFO, a device such as ``/dev/zero`` or a huge file
is refused in words before anything waits on it or reads it whole. A leading UTF-8 byte order
mark (what Windows editors write) is not part of the text, as the admin API reads a body."""

from __future__ import annotations

import os
import stat
from pathlib import Path


class FileRefused(ValueError):
    """The file is not one to read (its description completes "PATH ...")."""


def read_small_text(path: str | Path, limit: int) -> str:
    """The text of the regular file at *path*, at most *limit* bytes.

    :raises OSError: when it cannot be opened or read (missing, not permitted).
    :raises FileRefused: when it is not a regular file or is larger than *limit*.
    :raises UnicodeDecodeError: when it is not UTF-8.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise FileRefused("is not a regular file")
    with open(path, "rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise FileRefused(f"is larger than {limit // 1024} KiB")
    # utf-8-sig: a byte order mark is dropped (RFC 8259 §8.1 lets a JSON parser ignore
    # it); json.loads refused a JWK set saved by Notepad as "not valid JSON".
    return data.decode("utf-8-sig")
