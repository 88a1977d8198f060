"""Reading a large JSON annotation file one array element at a time.

``json.load`` of a train-scale detection file (Objects365: ~6 GB of text) holds the whole text and
then a Python object per value at once, tens of GB. :func:`iter_top_level` walks the top-level
object instead and decodes each element of its arrays separately with the standard library's own
decoder (``json.JSONDecoder.raw_decode``), so memory stays at one read chunk plus one element.
:func:`iter_array` does the same for a file whose top level is an array (Visual Genome's files).
"""

from __future__ import annotations

import codecs
import json
import os
import re
from typing import Any, Callable, Iterator

__all__ = ["iter_top_level", "iter_array"]

_DECODER = json.JSONDecoder()
_WHITESPACE = re.compile(r"[ \t\n\r]*")
_MAX_VALUE_CHARS = 256 * 2**20  # one element (an image, an annotation) is far smaller


class _Reader:
    """A sliding window over a UTF-8 file: ``buffer[pos:]`` is what is not consumed yet."""

    def __init__(self, path: str, chunk_bytes: int, progress: Callable[[int], None] | None):
        self.path = path
        self.file = open(path, "rb")
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.chunk_bytes = chunk_bytes
        self.progress = progress
        self.buffer = ""
        self.pos = 0
        self.eof = False

    def close(self) -> None:
        self.file.close()

    def read_more(self, at_least: int = 0) -> bool:
        """Append the next chunk (``at_least`` bytes when larger); False at the end of the file."""
        data = self.file.read(max(self.chunk_bytes, at_least))
        if self.progress is not None:
            self.progress(len(data))
        text = self.decoder.decode(data, final=not data)
        if not data:
            self.eof = True
            return False
        self.buffer = self.buffer[self.pos :] + text
        self.pos = 0
        return True

    def peek(self) -> str:
        """The next non-whitespace character, not consumed ("" at the end of the file)."""
        while True:
            self.pos = _WHITESPACE.match(self.buffer, self.pos).end()
            if self.pos < len(self.buffer):
                return self.buffer[self.pos]
            if not self.read_more():
                return ""

    def expect(self, allowed: str) -> str:
        """Consume the next non-whitespace character, which must be one of ``allowed``."""
        char = self.peek()
        if not char or char not in allowed:
            found = repr(char) if char else "the end of the file"
            raise self.error(f"expected one of {list(allowed)} but found {found}")
        self.pos += 1
        return char

    def value(self) -> Any:
        """Decode the JSON value that starts at the next non-whitespace character."""
        self.peek()
        while True:
            try:
                value, end = _DECODER.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as error:
                truncated = error.pos >= len(self.buffer) - 6 or error.msg.startswith("Unterminated string")
                if self.eof or not truncated or len(self.buffer) - self.pos > _MAX_VALUE_CHARS:
                    raise self.error(error.msg) from None
                self.read_more(at_least=len(self.buffer))  # the value continues in the file
                continue
            if end == len(self.buffer) and not self.eof and self.read_more():
                continue  # a number at the end of the window may continue in the next chunk
            self.pos = end
            return value

    def error(self, message: str) -> ValueError:
        offset = self.file.tell() - len(self.buffer[self.pos :].encode("utf-8"))
        return ValueError(f"{self.path}: malformed JSON near byte {max(offset, 0)}: {message}")


def iter_top_level(
    path: str | os.PathLike, *, chunk_bytes: int = 2**20, progress: Callable[[int], None] | None = None
) -> Iterator[tuple[str, Any]]:
    """Walk a JSON file whose top level is an object, one element at a time.

    Args:
        path: the JSON file.
        chunk_bytes: bytes read at a time.
        progress: called with the number of bytes read after each read (e.g. ``tqdm.update``).
    Yields:
        ``(key, element)`` for each element of a top-level array value (in file order), and
        ``(key, value)`` once for any other top-level value.
    Raises:
        ValueError: naming the file and the byte offset, when the file is not such a JSON document.
    """
    reader = _Reader(os.fspath(path), chunk_bytes, progress)
    try:
        reader.expect("{")
        if reader.peek() == "}":
            reader.pos += 1
        else:
            while True:
                key = reader.value()
                if not isinstance(key, str):
                    raise reader.error(f"expected a key string, found {key!r}")
                reader.expect(":")
                if reader.peek() == "[":
                    yield from ((key, element) for element in _elements(reader))
                else:
                    yield key, reader.value()
                if reader.expect(",}") == "}":
                    break
        if reader.peek():
            raise reader.error("unexpected content after the top-level object")
    finally:
        reader.close()


def _elements(reader: _Reader) -> Iterator[Any]:
    """The elements of the array that starts at the next non-whitespace character, consumed."""
    reader.expect("[")
    if reader.peek() == "]":
        reader.pos += 1
        return
    while True:
        yield reader.value()
        if reader.expect(",]") == "]":
            return


def iter_array(
    path: str | os.PathLike, *, chunk_bytes: int = 2**20, progress: Callable[[int], None] | None = None
) -> Iterator[Any]:
    """Walk a JSON file whose top level is an array, one element at a time (arguments as
    :func:`iter_top_level`).

    Raises:
        ValueError: naming the file and the byte offset, when the file is not such a JSON document.
    """
    reader = _Reader(os.fspath(path), chunk_bytes, progress)
    try:
        yield from _elements(reader)
        if reader.peek():
            raise reader.error("unexpected content after the top-level array")
    finally:
        reader.close()
