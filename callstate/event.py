"""Events: one Twilio callback (or one REST observation), as the workers receive and store it.

Pure: no Starlette, no Redis. :func:`parse_callback` turns the decoded parameters of a request that
already passed signature validation into an :class:`Event`, or raises :class:`InvalidCallback` naming
the unusable field. Unknown parameters and unknown status values are kept as they are: Twilio adds
parameters without notice, and they are never an error.

An event has two forms:

* the *canonical* form (``kind``, ``source``, ``params``; ``params`` sorted and de-duplicated; and
  ``tenant`` when a subaccount's token verified it) is the event's content. Two deliveries of the
  same request have the same canonical form, so storing events as a set of canonical forms is what
  makes duplicates disappear;
* the *wire* form adds what the receiver knew about this delivery (arrival time, Twilio's
  ``I-Twilio-Idempotency-Token``). It travels in the job and the logs but never reaches the state,
  which must not depend on which delivery of a request got there first.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Final, Literal

import orjson

from callstate import keys
from callstate.errors import InvalidCallback
from callstate.paramnames import PREFIXES, cut_short, genuineness, signed_concatenation

Kind = Literal["call", "recording"]
KINDS: Final = ("call", "recording")

#: Twilio SIDs: two letters and 32 hex digits (docs/twilio.md, "SIDs").
CALL_SID: Final = re.compile(r"CA[0-9a-fA-F]{32}")
RECORDING_SID: Final = re.compile(r"RE[0-9a-fA-F]{32}")
ACCOUNT_SID: Final = re.compile(r"AC[0-9a-fA-F]{32}")
#: A call record (:meth:`Event.record`): a CallSid, or a CallSid and the tenant that vouched for it.
CALL_RECORD: Final = re.compile(r"CA[0-9a-fA-F]{32}(?::AC[0-9a-fA-F]{32})?")

#: Parameters that must look like a SID of the given pattern whenever they are present.
_SID_FIELDS: Final = {
    "CallSid": CALL_SID,
    "ParentCallSid": CALL_SID,
    "AccountSid": ACCOUNT_SID,
    "RecordingSid": RECORDING_SID,
}

#: Parameters that decide which call, recording or state an event is about: a second, different
#: value would make the event ambiguous, so it is refused rather than guessed.
_SINGLE_VALUED: Final = frozenset((*_SID_FIELDS, "CallStatus", "RecordingStatus", "SequenceNumber"))

#: Sequence numbers beyond this are not something Twilio sends; treating them as absent keeps a
#: signed but absurd value from dominating the ordering.
_MAX_SEQUENCE: Final = 1_000_000


@dataclass(frozen=True, slots=True)
class Event:
    """One callback. ``params`` are the decoded form parameters, sorted by (name, value), repeats of
    an identical pair removed; repeated names with different values are kept.

    ``tenant`` is the AccountSid of the subaccount whose own auth token verified the callback
    (``TWILIO_SUBACCOUNT_TOKENS``), or ``None`` when the main token did: it decides which record
    the event may change (:meth:`record`), so a tenant can never touch another account's calls.

    ``received_at`` (Unix seconds) and ``idempotency_token`` describe the delivery, not the event:
    they are excluded from equality, hashing and the canonical form.
    """

    kind: Kind
    params: tuple[tuple[str, str], ...]
    source: str = "twilio"
    tenant: str | None = None
    received_at: float | None = field(default=None, compare=False)
    idempotency_token: str | None = field(default=None, compare=False)

    @classmethod
    def create(
        cls,
        kind: Kind,
        params: Iterable[tuple[str, str]],
        *,
        source: str = "twilio",
        tenant: str | None = None,
        received_at: float | None = None,
        idempotency_token: str | None = None,
    ) -> Event:
        """Build an event with ``params`` put in canonical order."""
        return cls(kind, tuple(sorted(set(params))), source, tenant or None, received_at, idempotency_token)

    def get(self, name: str) -> str | None:
        """The first value of parameter ``name`` in canonical order, or ``None``."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def fields(self) -> dict[str, str]:
        """The parameters as a dict, keeping the first value of a repeated name."""
        return dict(reversed(self.params))

    # -- derived facts -----------------------------------------------------------------------

    @property
    def call_sid(self) -> str | None:
        return self.get("CallSid") or None

    @property
    def recording_sid(self) -> str | None:
        return self.get("RecordingSid") or None

    @property
    def status(self) -> str | None:
        """``CallStatus`` of a call event, ``RecordingStatus`` of a recording event."""
        return self.get("CallStatus" if self.kind == "call" else "RecordingStatus")

    @property
    def sequence_number(self) -> int | None:
        return parse_sequence_number(self.get("SequenceNumber"))

    @property
    def timestamp(self) -> datetime | None:
        """``Timestamp`` (RFC 2822, one-second resolution) as an aware UTC datetime."""
        return parse_timestamp(self.get("Timestamp"))

    # -- identity and encodings --------------------------------------------------------------

    def canonical(self) -> bytes:
        """The content as compact JSON, byte-identical for every delivery of the same request."""
        return orjson.dumps(self._content())

    def _content(self) -> dict[str, Any]:
        content: dict[str, Any] = {"kind": self.kind, "source": self.source, "params": self.params}
        if self.tenant is not None:
            content["tenant"] = self.tenant
        return content

    def digest(self) -> str:
        """16 hex digits of BLAKE2b over :meth:`canonical`: the content's name in the event set."""
        return hashlib.blake2b(self.canonical(), digest_size=8).hexdigest()

    def identity(self) -> str:
        """The event's identity (docs/contracts.md, "Event identity") without the CallSid (the key has it).

        Call events: ``c:<SequenceNumber>:<CallStatus>``; recording events:
        ``r:<RecordingSid>:<RecordingStatus>``; a call event without a usable SequenceNumber is
        identified by its content: ``c:~<digest>``.
        """
        if self.kind == "recording":
            return f"r:{self.recording_sid}:{self.status or ''}"
        seq = self.sequence_number
        if seq is None:
            return f"c:~{self.digest()}"
        return f"c:{seq}:{self.status or ''}"

    def slot(self) -> str:
        """The field under which the event set stores this event: ``<kind>:<source>:<digest>``,
        the digest being 16 hex digits of BLAKE2b over the signed concatenation
        (:func:`~callstate.paramnames.signed_concatenation`).

        Every re-split of one signed callback has the same slot, so it holds one event whatever an
        attacker sends; which of them is decided by :meth:`preference`, not by arrival order.
        """
        concatenation = signed_concatenation(self.params).encode("utf-8", "surrogatepass")
        return f"{self.kind[0]}:{self.source}:{hashlib.blake2b(concatenation, digest_size=8).hexdigest()}"

    def preference(self) -> str:
        """Which of two events sharing a slot (or an identity) is kept: the greater string wins.

        22 characters: the three numbers of :func:`~callstate.paramnames.genuineness` as a byte of
        hex each (offset by 128 and clamped), then :meth:`digest` to make the order total. Twilio's
        own split of a callback outranks every re-split of it.
        """
        rank = "".join(f"{min(max(n + 128, 0), 255):02x}" for n in genuineness(self.params))
        return rank + self.digest()

    def record(self) -> str | None:
        """The call record this event belongs to: the CallSid, suffixed ``:<tenant>`` when a
        subaccount's token verified it (docs/redis-schema.md, "Tenants"); ``None`` without a
        CallSid (a conference recording)."""
        sid = self.call_sid
        return None if sid is None else keys.record(sid, self.tenant)

    def to_wire(self) -> dict[str, Any]:
        """The job payload form (canonical form plus delivery metadata), made by :func:`wire_event`."""
        return wire_event(
            self.kind,
            self.params,
            source=self.source,
            received_at=self.received_at,
            idempotency_token=self.idempotency_token,
            tenant=self.tenant,
        )

    @classmethod
    def from_wire(cls, data: Mapping[str, Any]) -> Event:
        """Inverse of :meth:`to_wire` and of the parsed :meth:`canonical` form."""
        kind = data["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        params = [(str(name), str(value)) for name, value in data["params"]]
        return cls.create(
            kind,
            params,
            source=str(data.get("source", "twilio")),
            tenant=data.get("tenant"),
            received_at=data.get("received_at"),
            idempotency_token=data.get("idempotency_token"),
        )

    @classmethod
    def from_canonical(cls, raw: bytes | str) -> Event:
        return cls.from_wire(orjson.loads(raw))


def parse_sequence_number(value: str | None) -> int | None:
    """A non-negative decimal SequenceNumber, or ``None`` for absent or unusable values."""
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 9:
        return None
    number = int(value)
    return number if number <= _MAX_SEQUENCE else None


def parse_timestamp(value: str | None) -> datetime | None:
    """An RFC 2822 date (``Tue, 01 Sep 2026 12:00:00 +0000``) as aware UTC, or ``None``."""
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
        if parsed.tzinfo is None:
            # RFC 2822 "-0000" means "UTC, zone unknown"; Python returns it naive.
            parsed = parsed.replace(tzinfo=UTC)
        # Year 9999 in a negative offset overflows here: signed, strange, and still no crash.
        return parsed.astimezone(UTC)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def parse_callback(
    kind: Kind,
    params: Iterable[tuple[str, str]],
    *,
    received_at: float | None = None,
    idempotency_token: str | None = None,
) -> Event:
    """Turn the decoded parameters of a signed callback into an :class:`Event`.

    Raises :class:`InvalidCallback` as :func:`check_callback` does.
    """
    pairs = list(params)
    check_callback(kind, pairs)
    return Event.create(kind, pairs, received_at=received_at, idempotency_token=idempotency_token)


def check_callback(kind: Kind, params: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Check the parameters of a signed callback; return the first value of each name.

    Raises :class:`InvalidCallback` naming the field when a call-status callback has no
    ``CallSid``, a recording callback has no ``RecordingSid``, a SID parameter is malformed, or a
    parameter that identifies the event has two different values. A recording callback without
    ``CallSid`` (conference recordings) is valid. A pair whose name is a known Twilio name cut short,
    the rest at the start of its value (a re-split of a signed callback,
    :func:`~callstate.paramnames.cut_short`), is refused too. Of several faults, the one of the
    alphabetically first field is reported, whatever the order of the parameters.
    """
    fields, fault = scan_callback(kind, params)
    if fault is not None:
        raise fault
    return fields


def scan_callback(
    kind: Kind, params: Sequence[tuple[str, str]]
) -> tuple[dict[str, str], InvalidCallback | None]:
    """:func:`check_callback` without raising: the fields, and the fault if there is one. The
    receiver scans before it checks the signature (it needs ``AccountSid`` to pick the token) but
    reports a fault only after: the signature is checked before the content."""
    fields: dict[str, str] = {}
    faults: dict[str, str] = {}
    #: Pairs to look at for a name cut short: later values of repeated names, then (below) the
    #: names that are a prefix of a known one.
    repeats: list[tuple[str, str]] = []
    for name, value in params:
        first = fields.setdefault(name, value)
        if first != value:
            repeats.append((name, value))
            if name in _SINGLE_VALUED:
                faults[name] = "repeated"
        pattern = _SID_FIELDS.get(name)
        if pattern is not None and value and not pattern.fullmatch(value):
            faults.setdefault(name, "malformed")
    # Only names that are a proper prefix of a known name can be cut short: one set operation
    # finds them (the hot path), then their values are looked at.
    for name in PREFIXES.intersection(fields):
        repeats.append((name, fields[name]))
    for name, value in repeats:
        whole = cut_short(name, value)
        if whole is not None:
            # The name is a prefix of a known name, hence plain ASCII letters: safe in a reason.
            faults.setdefault(name, f"a re-split of {whole} (the name is cut short)")
    required = "CallSid" if kind == "call" else "RecordingSid"
    if not fields.get(required):
        return fields, InvalidCallback(f"{required} is missing", field=required)
    if faults:
        name = min(faults)
        return fields, InvalidCallback(f"{name} is {faults[name]}", field=name)
    return fields, None


def wire_event(
    kind: Kind,
    params: Sequence[tuple[str, str]],
    *,
    source: str = "twilio",
    received_at: float | None,
    idempotency_token: str | None,
    tenant: str | None = None,
) -> dict[str, Any]:
    """The job payload of one event: the one producer of the dict that :meth:`Event.from_wire` reads.

    The receiver calls it directly with a checked callback, without building the :class:`Event`
    (its hot path: the workers put ``params`` in canonical order when they read it).
    """
    wire: dict[str, Any] = {"kind": kind, "source": source, "params": params}
    if tenant is not None:
        wire["tenant"] = tenant
    if received_at is not None:
        wire["received_at"] = received_at
    if idempotency_token is not None:
        wire["idempotency_token"] = idempotency_token
    return wire
