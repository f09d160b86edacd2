"""Compact JSON text of small values, many times a second, without json.dumps' cost per call.

Why it exists: a push encodes several small JSON values per record (the computed columns' text, a
digest's input, the hash of an answer). `json.dumps` with options builds an encoder per call and
`JSONEncoder.encode` builds its C encoder per call; for values of a hundred bytes that setup is
about a third of the time. This builds the C encoder once. The text is byte for byte what
`json.dumps(value, sort_keys=..., separators=(",", ":"), ensure_ascii=..., default=...)` gives.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring, encode_basestring_ascii
from typing import Any

# The C accelerator's encoder factory (None on an interpreter without it: the plain encoder does it all).
c_make_encoder: Callable[..., Callable[[Any, int], Any]] | None = getattr(json.encoder, "c_make_encoder", None)


class CompactJson:
    """`encode(value)`: the compact JSON text of `value` with these options."""

    def __init__(self, *, sort_keys: bool, ensure_ascii: bool, default: Callable[[Any], Any] | None = None) -> None:
        self._plain = json.JSONEncoder(sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=ensure_ascii,
                                       default=default)
        self._string = encode_basestring_ascii if ensure_ascii else encode_basestring
        # No circular-reference bookkeeping (markers=None): the values are parsed JSON or built
        # from it; a value that does hold itself is handed to the plain encoder, which says so.
        self._fast = None if c_make_encoder is None else c_make_encoder(
            None, self._plain.default, self._string, None, ":", ",", sort_keys, False, True)

    def encode(self, value: Any) -> str:
        if isinstance(value, str):
            return self._string(value)
        if self._fast is None:
            return self._plain.encode(value)
        try:
            return "".join(self._fast(value, 0))
        except RecursionError:
            return self._plain.encode(value)
