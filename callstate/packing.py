"""The packed form of an event's content: what the event set stores, a third of the JSON's size.

Pure, and exact: :func:`unpack` of :func:`pack` gives back an equal :class:`Event` (same kind,
source and parameters, byte for byte), for any event, Twilio's or not; the state replayed from
packed events is the state reduced from the originals. Packing only makes the common case short:

* a parameter name Twilio documents is one byte (an index into :data:`NAMES`); any other is
  spelled out;
* a value is a tag byte and what the tag needs: a SID (``CA``/``AC``/``RE`` and 32 lowercase hex
  digits) is 16 bytes, a decimal integer or an E.164 number a varint, a Twilio ``Timestamp`` (RFC
  2822, as Twilio writes it) a varint of Unix seconds, a word Twilio repeats (a status, a
  direction, ``2010-04-01``...) one byte of :data:`WORDS`, a value equal to an earlier value of the
  same event (``Caller`` is ``From``) a back-reference, and ``RecordingUrl`` when it is the URL
  Twilio derives from the account and the recording a single byte. Anything else is UTF-8 text.

Each shortcut is taken only when expanding it gives back the very same string, so the choice is a
pure function of the value. :data:`NAMES` and :data:`WORDS` are append-only: stored bytes index into
them (docs/redis-schema.md documents the encoding).
"""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from typing import Final

from callstate.event import Event, Kind

#: Bump when the layout below changes incompatibly; :func:`unpack` refuses other versions.
FORMAT: Final = 1

#: Parameter names packed as one byte (their index). Append only.
NAMES: Final = (
    "AccountSid", "AddOns", "AnsweredBy", "ApiVersion", "CallDuration", "CallSid", "CallStatus",
    "CallToken", "CallbackSource", "Called", "CalledCity", "CalledCountry", "CalledState", "CalledVia",
    "CalledZip", "Caller", "CallerCity", "CallerCountry", "CallerName", "CallerState", "CallerZip",
    "ConferenceSid", "Digits", "Direction", "Duration", "ErrorCode", "ErrorMessage", "ForwardedFrom",
    "From", "FromCity", "FromCountry", "FromState", "FromZip", "MachineDetectionDuration",
    "ParentCallSid", "QueueTime", "RecordingChannels", "RecordingDuration", "RecordingSid",
    "RecordingSource", "RecordingStartTime", "RecordingStatus", "RecordingTrack", "RecordingUrl",
    "SequenceNumber", "SipResponseCode", "StirPassportToken", "StirStatus", "StirVerstat", "Timestamp",
    "To", "ToCity", "ToCountry", "ToState", "ToZip", "Trunk", "TrunkSid",
)  # fmt: skip

#: Values packed as one byte (their index). Append only.
WORDS: Final = (
    "queued", "initiated", "ringing", "in-progress", "completed", "busy", "failed", "no-answer",
    "canceled", "absent", "paused", "stopped", "processing", "answered",
    "inbound", "outbound-api", "outbound-dial", "trunking-terminating", "trunking-originating",
    "2010-04-01", "call-progress-events", "both", "mono", "dual",
    "OutboundAPI", "DialVerb", "Conference", "RecordVerb", "Trunking", "StartCallRecordingAPI",
    "StartCallRecordingTwiML", "human", "machine_start", "machine_end_beep", "machine_end_silence",
    "machine_end_other", "fax", "unknown", "A", "B", "C", "TN-Validation-Passed-A",
    "TN-Validation-Passed-B", "TN-Validation-Passed-C", "No-TN-Validation", "TN-Validation-Failed",
    "US", "CA", "GB", "true", "false",
)  # fmt: skip

_NAME_INDEX: Final = {name: i for i, name in enumerate(NAMES)}
_WORD_INDEX: Final = {word: i for i, word in enumerate(WORDS)}

# Header byte: kind, source, and whether the event carries a tenant.
_RECORDING: Final = 0x01
_REST: Final = 0x02
_OTHER_SOURCE: Final = 0x04
_TENANT: Final = 0x08

# Name byte 255: an unknown name follows as text.
_NAME_TEXT: Final = 255

# Value tags.
_TEXT: Final = 0
_EMPTY: Final = 1
_WORD: Final = 2
_INT: Final = 3
_PHONE: Final = 4
_TIME: Final = 5
_SAME: Final = 6
_RECORDING_URL: Final = 7
_SID: Final = 8  # + index into _SID_PREFIXES
#: Tags whose values are never referred back to (the reference would not be shorter).
_SHORTER_THAN_A_REFERENCE: Final = frozenset((_EMPTY, _WORD))
_SID_PREFIXES: Final = ("CA", "AC", "RE")

_SID_PATTERN: Final = re.compile(r"(CA|AC|RE)([0-9a-f]{32})")
_E164: Final = re.compile(r"\+([1-9][0-9]{0,17})")
_RECORDING_URL_TEMPLATE: Final = "https://api.twilio.com/2010-04-01/Accounts/{}/Recordings/{}"
_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
#: What email.utils.format_datetime writes for a UTC time, which is what Twilio sends.
_TWILIO_TIME: Final = re.compile(
    rf"(?:{'|'.join(_DAYS)}), (\d\d) ({'|'.join(_MONTHS)}) (\d{{4}}) (\d\d):(\d\d):(\d\d) \+0000"
)


#: Values met lately -> their tag and payload: most values repeat (words, a call's numbers and
#: SIDs in each of its events), so packing is mostly lookups. Emptied when full.
_ENCODED: dict[str, bytes] = {}
_CACHE_SIZE: Final = 50_000


class PackingError(ValueError):
    """Bytes that :func:`pack` did not produce (a corrupted or foreign value)."""


def pack(event: Event) -> bytes:
    """The packed form of ``event``'s content (delivery metadata is not part of it)."""
    out = bytearray([FORMAT, _header(event)])
    if event.source not in ("twilio", "rest"):
        _text(out, event.source)
    if event.tenant is not None:
        _text(out, event.tenant)
    write_varint(out, len(event.params))
    seen: dict[str, int] = {}
    url = _recording_url(event) if event.kind == "recording" else None
    for position, (name, value) in enumerate(event.params):
        index = _NAME_INDEX.get(name)
        if index is None:
            out.append(_NAME_TEXT)
            _text(out, name)
        else:
            out.append(index)
        # A value seen earlier in the event is a back-reference; the recording URL is derived.
        # (Neither is ever an empty value or a word, which are not registered in ``seen``.)
        earlier = seen.get(value)
        if earlier is not None:
            out.append(_SAME)
            write_varint(out, earlier)
            continue
        if value == url and name == "RecordingUrl":
            out.append(_RECORDING_URL)
            continue
        encoded = _ENCODED.get(value)
        if encoded is None:
            encoded = _encode_value(value)
            if len(_ENCODED) >= _CACHE_SIZE:
                _ENCODED.clear()
            _ENCODED[value] = encoded
        out += encoded
        if encoded[0] not in _SHORTER_THAN_A_REFERENCE:  # a later equal value refers back
            seen.setdefault(value, position)
    return bytes(out)


def unpack(data: bytes) -> Event:
    """The event :func:`pack` made ``data`` from; :class:`PackingError` for anything else."""
    try:
        return _unpack(data)
    except (IndexError, UnicodeDecodeError) as error:
        raise PackingError(f"not a packed event: {error}") from None


def _header(event: Event) -> int:
    header = _RECORDING if event.kind == "recording" else 0
    if event.source == "rest":
        header |= _REST
    elif event.source != "twilio":
        header |= _OTHER_SOURCE
    if event.tenant is not None:
        header |= _TENANT
    return header


def _recording_url(event: Event) -> str | None:
    """The URL Twilio gives a recording of this account, if the event names both."""
    account, recording = event.get("AccountSid"), event.get("RecordingSid")
    if account is None or recording is None:
        return None
    return _RECORDING_URL_TEMPLATE.format(account, recording)


def _encode_value(value: str) -> bytes:
    """The tag and payload of a value, as far as they depend on the value alone."""
    if not value:
        return bytes((_EMPTY,))
    word = _WORD_INDEX.get(value)
    if word is not None:
        return bytes((_WORD, word))
    out = bytearray()
    if not _shortcut(out, value):
        out.append(_TEXT)
        _text(out, value)
    return bytes(out)


def _shortcut(out: bytearray, value: str) -> bool:
    """Append ``value`` as an integer, E.164 number, SID or Twilio time if it is one exactly."""
    # The first character and the length pick the one pattern worth trying.
    first, size = value[0], len(value)
    if (
        "0" <= first <= "9"
        and size <= 18
        and value.isdigit()
        and value.isascii()
        and (first != "0" or size == 1)
    ):
        out.append(_INT)
        write_varint(out, int(value))
    elif first == "+" and _E164.fullmatch(value):
        out.append(_PHONE)
        write_varint(out, int(value[1:]))
    elif size == 34 and (sid := _SID_PATTERN.fullmatch(value)) is not None:
        out.append(_SID + _SID_PREFIXES.index(sid.group(1)))
        out += bytes.fromhex(sid.group(2))
    elif size == 31 and (seconds := _twilio_time(value)) is not None:
        out.append(_TIME)
        write_varint(out, seconds)
    else:
        return False
    return True


def _is_decimal(value: str) -> bool:
    """ASCII digits without a leading zero (``0`` itself allowed), at most 18 of them (a 64-bit
    varint): what ``str(int(value))`` gives back unchanged."""
    return len(value) <= 18 and value.isascii() and value.isdigit() and (value[0] != "0" or len(value) == 1)


def _twilio_time(value: str) -> int | None:
    """Unix seconds of an RFC 2822 date written exactly as Twilio writes it, else None."""
    match = _TWILIO_TIME.fullmatch(value)
    if match is None:
        return None
    day, month, year, hour, minute, second = match.groups()
    if int(year) < 1970:  # varints are unsigned (and timegm refuses year 0)
        return None
    fields = (int(year), _MONTHS.index(month) + 1, int(day), int(hour), int(minute), int(second))
    seconds = calendar.timegm(fields)
    # The round trip rejects what timegm normalises (31 Feb, 24:00, a wrong weekday) or predates 1970.
    return seconds if seconds >= 0 and _format_time(seconds) == value else None


def _format_time(seconds: int) -> str:
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} +0000"
    )


def write_varint(out: bytearray, number: int) -> None:
    """Append ``number`` (>= 0) to ``out`` as a little-endian base-128 varint."""
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _text(out: bytearray, text: str) -> None:
    # surrogatepass: a form value may hold a lone surrogate (an escaped %ED%A0%80 is not one, but
    # Python's form decoding can produce them); it must come back as it went in.
    raw = text.encode("utf-8", "surrogatepass")
    write_varint(out, len(raw))
    out += raw


def _unpack(data: bytes) -> Event:
    """:func:`unpack` without the error translation: one pass, local variables (it runs for every
    stored event a job reads)."""
    kind, source, tenant, at = _read_header(data)
    count, at = read_varint(data, at)
    params: list[tuple[str, str]] = []
    url_at: list[int] = []
    names, words = NAMES, WORDS
    for position in range(count):
        index = data[at]
        if index == _NAME_TEXT:
            name, at = _read_text(data, at + 1)
        else:
            name, at = names[index], at + 1
        tag = data[at]
        at += 1
        # The common tags inline (a function call per parameter costs a third of the time).
        if tag == _WORD:
            value, at = words[data[at]], at + 1
        elif tag == _EMPTY:
            value = ""
        elif tag == _RECORDING_URL:
            url_at.append(position)
            value = ""  # filled in below, once AccountSid and RecordingSid are known
        else:
            value, at = _read_value(data, at, tag, params)
        params.append((name, value))
    if at != len(data):
        raise PackingError("trailing bytes")
    event = _event(kind, source, tenant, params)
    if url_at:
        url = _recording_url(event)
        if url is None:
            raise PackingError("a recording URL without its account and recording")
        for position in url_at:
            params[position] = (params[position][0], url)
        event = _event(kind, source, tenant, params)
    return event


def _read_header(data: bytes) -> tuple[Kind, str, str | None, int]:
    """Kind, source and tenant of a packed event, and where its parameters start."""
    if data[0] != FORMAT:
        raise PackingError("unknown packing format")
    header, at = data[1], 2
    kind: Kind = "recording" if header & _RECORDING else "call"
    source = "twilio"
    if header & _REST:
        source = "rest"
    elif header & _OTHER_SOURCE:
        source, at = _read_text(data, at)
    tenant = None
    if header & _TENANT:
        tenant, at = _read_text(data, at)
    return kind, source, tenant, at


def _read_value(data: bytes, at: int, tag: int, params: list[tuple[str, str]]) -> tuple[str, int]:
    """The value of ``tag`` at ``data[at:]`` (not a word, an empty value or a recording URL: the
    caller reads those), and where the next one starts."""
    if _SID <= tag < _SID + len(_SID_PREFIXES):
        raw = data[at : at + 16]
        if len(raw) != 16:
            raise IndexError("SID runs past the end")
        return _SID_PREFIXES[tag - _SID] + raw.hex(), at + 16
    if tag == _TEXT:
        return _read_text(data, at)
    number, at = read_varint(data, at)
    read = _NUMBERS.get(tag)
    if read is not None:
        return read(number), at
    if tag == _SAME:
        return params[number][1], at
    raise PackingError(f"unknown value tag {tag}")


_NUMBERS: Final[dict[int, Callable[[int], str]]] = {
    _INT: str,
    _PHONE: lambda number: f"+{number}",
    _TIME: _format_time,
}


def read_varint(data: bytes, at: int) -> tuple[int, int]:
    """The varint at ``data[at:]`` and the position after it (IndexError if it runs past the end)."""
    byte = data[at]
    if byte < 0x80:
        return byte, at + 1
    number, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        number |= (byte & 0x7F) << shift
        if byte < 0x80:
            return number, at
        shift += 7


def _read_text(data: bytes, at: int) -> tuple[str, int]:
    length, at = read_varint(data, at)
    raw = data[at : at + length]
    if len(raw) != length:
        raise IndexError("text runs past the end")
    return raw.decode("utf-8", "surrogatepass"), at + length


def _event(kind: Kind, source: str, tenant: str | None, params: list[tuple[str, str]]) -> Event:
    # pack() wrote the parameters in canonical order (sorted, without repeats): no sort needed.
    return Event(kind, tuple(params), source, tenant)
