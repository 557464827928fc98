"""Reading text files with errors that name the file: the one place stad decodes a text file from elsewhere."""

from __future__ import annotations

from pathlib import Path

from stad.errors import StadError

__all__ = ["read_text"]


def read_text(path: str | Path, *, what: str = "a text file") -> str:
    """The UTF-8 text of ``path``.

    Raises:
        FileNotFoundError: ``path`` is missing. StadError: it is not UTF-8; the message names the file, the line and
            column of the first bad byte and the byte, e.g. ``dets.csv: not UTF-8 text (byte 0xff at line 3, column
            12); expected a detections CSV``.
    """
    path = Path(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise StadError(f"{path}: not UTF-8 text (byte 0x{data[err.start]:02x} at line {line}, column {column}); "
                        f"expected {what}") from None
