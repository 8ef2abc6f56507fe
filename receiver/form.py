"""Decoding of ``application/x-www-form-urlencoded`` bodies and URL query strings.

This module owns one thing: turning the raw bytes of a form body (or of a query string, which has the
same grammar) into the ordered list of decoded ``(name, value)`` pairs. Twilio signs the *decoded*
values (docs/twilio.md, "The signature algorithm"), so this decoding is part of signature checking and
must agree with what ``urllib.parse.parse_qsl(..., keep_blank_values=True)`` produces for a well-formed body.
Unlike ``parse_qsl`` it is strict: a broken percent escape or invalid UTF-8 is an error, never a
silent U+FFFD. It is pure (no Starlette) and sits on the hot path of every callback.
"""

from __future__ import annotations

import binascii
import re

from callstate.errors import InvalidCallback

# bytes.translate(None, delete=...) with this table keeps only the '&' and '=' of a body.
_ALL_BUT_SEPARATORS = bytes(byte for byte in range(256) if byte not in b"&=")
_MALFORMED_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def parse_form(data: bytes) -> list[tuple[str, str]]:
    """Decode a form body or query string into ``(name, value)`` pairs, in order.

    The grammar is ``parse_qsl``'s with ``keep_blank_values=True``: segments are separated by ``&``
    only; a segment splits at its first ``=`` (``a=b=c`` gives ``("a", "b=c")``); a segment without
    ``=`` gives ``(name, "")``; empty segments (``a=1&&b=2``) are skipped; repeated names are all kept.
    In each name and value ``+`` becomes a space, then ``%XX`` escapes are decoded, then the bytes are
    decoded as strict UTF-8. NUL characters are legal and kept. Empty input gives ``[]``.

    Raises :class:`~callstate.errors.InvalidCallback` (``field=None``) for a ``%`` not followed by two
    hex digits, or for bytes that are not UTF-8 once decoded. A malformed escape anywhere is reported
    in preference to invalid UTF-8.
    """
    if not data:
        return []
    if b"%" in data and _MALFORMED_ESCAPE.search(data):
        # parse_qsl would keep "%zz" literally; Twilio never sends one, so the body did not come from
        # Twilio intact and there is no single right reading of it.
        raise InvalidCallback("form body has a malformed percent escape")

    # Speed: decoding each of the ~60 names and values of a callback separately costs about as much as
    # parse_qsl. Instead the pairs are joined with NUL into one buffer that is percent-decoded and
    # UTF-8-decoded in one go, then split on NUL, several times cheaper (bench/RESULTS.md,
    # "Micro-measurements"). A NUL cannot merge or split a UTF-8 sequence (it is ASCII), and a NUL
    # that came from the data is detected by the part count below.
    pair_count = data.count(b"&") + 1
    if data.translate(None, _ALL_BUT_SEPARATORS) == b"=" + b"&=" * (pair_count - 1):
        # The usual body: every segment has exactly one '=' and none is empty, so each separator
        # simply becomes NUL.
        joined = data.replace(b"&", b"\0").replace(b"=", b"\0")
    else:
        segments = [segment.partition(b"=") for segment in data.split(b"&") if segment]
        if not segments:
            return []
        pair_count = len(segments)
        joined = b"\0".join([part for name, _, value in segments for part in (name, value)])

    parts = _decode(joined).split("\0")
    if len(parts) != 2 * pair_count:
        # The data itself holds NUL (raw or as %00): decode each name and value on its own.
        return [
            (_decode(name), _decode(value))
            for name, _, value in (segment.partition(b"=") for segment in data.split(b"&") if segment)
        ]
    pairs = iter(parts)
    return list(zip(pairs, pairs, strict=True))


def _decode(raw: bytes) -> str:
    """Decode one name or value (or several joined by NUL); escapes are already known to be valid."""
    raw = raw.replace(b"+", b" ")
    if b"%" in raw:
        # binascii.a2b_qp decodes quoted-printable "=XX" escapes in C, and with header=False it copies
        # every other byte unchanged. Once each literal '=' is itself escaped as "=3D" and each "%XX"
        # (all known to be well formed) is written "=XX", it is exactly a percent-decoder, faster than
        # urllib's (bench/RESULTS.md, "Micro-measurements"). tests/receiver/test_form.py checks it
        # against a plain decoder.
        raw = binascii.a2b_qp(raw.replace(b"=", b"=3D").replace(b"%", b"="))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCallback("form body is not valid UTF-8") from None
