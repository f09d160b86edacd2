"""Compact JSON text of small values, many times a second, byte for byte what `json.dumps` gives.

Why it exists: a push encodes several small JSON values per record (the computed columns' text, a
digest's input, the hash of an answer, a saved merge base). `json.dumps` with options builds an
encoder per call and `JSONEncoder.encode` builds its C encoder per call; for values of a hundred
bytes that setup is about a third of the time. And the C encoder itself is 4-5 times slower than
orjson's. The text must not change (it is stored in Twenty and hashed: another text is another
hash, and every record would be sent again), so orjson's answer is taken only where it is
provably `json.dumps`' own, and the standard encoder (built once) does the rest:

- orjson writes NaN and Infinity as `null`: an answer holding `null` is parsed back and compared;
- it writes small floats and short negative exponents in another form (`0.00001`, `1e-9` against
  `1e-05`, `1e-09`): an answer with `0.0000` or a one-digit negative exponent goes to json;
- it has no ensure_ascii: characters past `~` are escaped here as json does (`\\u00e9`, surrogate
  pairs beyond the BMP, DEL as `\\u007f`);
- integers past 64 bits, keys that are not text, nesting deeper than 254 and lone surrogates make
  orjson refuse: json answers (or raises its own error).
Reading (`read_json`) is orjson's too where it gives json's value: not when it refuses the text
(NaN, Infinity, lone surrogates: json's extensions, or an error json then words its own way), nor
when the text holds a run of 19 digits (orjson reads an integer past 64 bits as a float).
Dates, times and dataclasses go to `default` as with json (orjson would write them itself). One
difference is left: a plain `Enum` member (json needs `default` for one) is written by its value;
no value read from a warehouse or from Twenty is one.
`tests/test_json_text.py` holds both paths to json's text over every kind of value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

import orjson

# The C accelerator's encoder factory (None on an interpreter without it: the plain encoder does it all).
c_make_encoder: Callable[..., Callable[[Any, int], Any]] | None = getattr(json.encoder, "c_make_encoder", None)

_ORJSON_PASSTHROUGH = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# Number forms orjson writes unlike json (a match inside a string only costs the slower path):
# `0.0000`, or a one-digit negative exponent. Looked for with `in` first: the regex alone scanned a
# 300-byte text in 1.5 us, four times orjson's own encoding of it; `e-` is rare outside words.
_SHORT_NEGATIVE_EXPONENT = re.compile(rb"e-\d(?!\d)")
_PAST_ASCII = re.compile("[\x7f-\U0010ffff]")
# A run of 19 digits may be an integer orjson would read as a float. Found by mapping every digit
# to NUL and looking for 19 of them (a regex is 15 times slower on a 160 KB answer; a run inside a
# string, or a NUL that is not JSON anyway, only costs json's slower reading).
_DIGITS_TO_NUL = bytes.maketrans(b"0123456789", b"\x00" * 10)
_LONG_DIGIT_RUN = b"\x00" * 19


def read_json(data: str | bytes, otherwise: Callable[[Any], Any]) -> Any:
    """The value json reads from `data`: orjson's reading where that is json's own (4 times
    faster), else what `otherwise(data)` (json's reading of it) returns or raises."""
    # A text's bytes (orjson refuses those of a lone surrogate, which json then reads).
    raw = data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass")
    if _LONG_DIGIT_RUN not in raw.translate(_DIGITS_TO_NUL):
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass  # json decides: it reads what orjson refuses, or raises its own error
    return otherwise(data)


def _escape_past_ascii(match: re.Match[str]) -> str:
    """json's ensure_ascii escape of one character (a surrogate pair beyond the BMP)."""
    n = ord(match.group())
    if n < 0x10000:
        return f"\\u{n:04x}"
    n -= 0x10000
    return f"\\u{0xD800 | (n >> 10) & 0x3FF:04x}\\u{0xDC00 | n & 0x3FF:04x}"


class CompactJson:
    """`encode(value)`: the compact JSON text of `value` with these options, as
    `json.dumps(value, sort_keys=..., separators=(",", ":"), ensure_ascii=..., allow_nan=..., default=...)`."""

    def __init__(self, *, sort_keys: bool, ensure_ascii: bool, default: Callable[[Any], Any] | None = None,
                 allow_nan: bool = True) -> None:
        self._plain = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ensure_ascii,
                                       default=default, allow_nan=allow_nan)
        self._string = encode_basestring_ascii if ensure_ascii else encode_basestring
        self._ensure_ascii = ensure_ascii
        self._default = default
        self._options = _ORJSON_PASSTHROUGH | (orjson.OPT_SORT_KEYS if sort_keys else 0)
        # No circular-reference bookkeeping (markers=None): the values are parsed JSON or built
        # from it; a value that does hold itself is handed to the plain encoder, which says so.
        self._fast = None if c_make_encoder is None else c_make_encoder(
            None, self._plain.default, self._string, None, ":", ",", sort_keys, False, allow_nan)

    def encode(self, value: Any) -> str:
        if isinstance(value, str):
            return self._string(value)
        text = self._by_orjson(value)
        if text is not None:
            return text
        if self._fast is None:
            return self._plain.encode(value)
        try:
            return "".join(self._fast(value, 0))
        except (RecursionError, TypeError, ValueError):
            return self._plain.encode(value)  # the same text, or the plain encoder's own error

    def _by_orjson(self, value: Any) -> str | None:
        """orjson's text when it is json's own (see the module's list), else None."""
        try:
            out = orjson.dumps(value, default=self._default, option=self._options)
        except (TypeError, ValueError):  # orjson.JSONEncodeError is a TypeError
            return None
        if b"0.0000" in out or (b"e-" in out and _SHORT_NEGATIVE_EXPONENT.search(out)):
            return None
        if b"null" in out and orjson.loads(out) != value:
            return None  # a NaN or Infinity became null (or a type json writes its own way)
        text = out.decode()
        if self._ensure_ascii and (b"\x7f" in out or not out.isascii()):
            text = _PAST_ASCII.sub(_escape_past_ascii, text)
        return text
