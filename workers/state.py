"""The reconciled call (docs/contracts.md, "The reconciled call"): the data model and its JSON.

:class:`CallState` is what :func:`workers.reduce.reduce` returns, what the store keeps
(its :meth:`CallState.to_json` bytes) and what the read API and dashboards read back. The JSON keys
and their order are part of the public contract (docs/redis-schema.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class CallEventEntry:
    """One distinct call event as listed in the state's ``events``."""

    sequence_number: int | None
    status: str | None
    timestamp: datetime | None
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "sequence_number": self.sequence_number,
            "status": self.status,
            "timestamp": iso(self.timestamp),
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallEventEntry:
        return cls(
            data.get("sequence_number"),
            data.get("status"),
            from_iso(data.get("timestamp")),
            data.get("source", "twilio"),
        )


@dataclass(frozen=True, slots=True)
class Recording:
    """One recording of the call (one ``RecordingSid``), reconciled from its callbacks."""

    sid: str
    status: str | None
    url: str | None
    duration: int | None
    channels: int | None
    source: str | None
    track: str | None
    start_time: datetime | None
    error_code: int | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "sid": self.sid,
            "status": self.status,
            "url": self.url,
            "duration": self.duration,
            "channels": self.channels,
            "source": self.source,
            "track": self.track,
            "start_time": iso(self.start_time),
            "error_code": self.error_code,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recording:
        return cls(
            data["sid"],
            data.get("status"),
            data.get("url"),
            data.get("duration"),
            data.get("channels"),
            data.get("source"),
            data.get("track"),
            from_iso(data.get("start_time")),
            data.get("error_code"),
        )


@dataclass(frozen=True, slots=True)
class CallState:
    """The reconciled call (docs/contracts.md, "The reconciled call"); ``from_`` is its key ``from``."""

    sid: str
    account_sid: str | None
    parent_call_sid: str | None
    direction: str | None
    from_: str | None
    to: str | None
    status: str | None
    final: bool
    duration: int | None
    sip_response_code: int | None
    answered_by: str | None
    sequence_number: int | None
    events: tuple[CallEventEntry, ...]
    recordings: tuple[Recording, ...]
    updated_at: datetime | None

    def to_dict(self) -> dict[str, Any]:
        """The documented JSON object, keys in the documented order."""
        return {
            "sid": self.sid,
            "account_sid": self.account_sid,
            "parent_call_sid": self.parent_call_sid,
            "direction": self.direction,
            "from": self.from_,
            "to": self.to,
            "status": self.status,
            "final": self.final,
            "duration": self.duration,
            "sip_response_code": self.sip_response_code,
            "answered_by": self.answered_by,
            "sequence_number": self.sequence_number,
            "events": [entry.to_dict() for entry in self.events],
            "recordings": [recording.to_dict() for recording in self.recordings],
            "updated_at": iso(self.updated_at),
        }

    def to_json(self) -> bytes:
        """Compact JSON; the same state always gives the same bytes (the store compares them)."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CallState:
        """Inverse of :meth:`to_dict`. Keys it does not know are ignored (fields may be added)."""
        return cls(
            sid=data["sid"],
            account_sid=data.get("account_sid"),
            parent_call_sid=data.get("parent_call_sid"),
            direction=data.get("direction"),
            from_=data.get("from"),
            to=data.get("to"),
            status=data.get("status"),
            final=bool(data.get("final", False)),
            duration=data.get("duration"),
            sip_response_code=data.get("sip_response_code"),
            answered_by=data.get("answered_by"),
            sequence_number=data.get("sequence_number"),
            events=tuple(CallEventEntry.from_dict(entry) for entry in data.get("events", ())),
            recordings=tuple(Recording.from_dict(entry) for entry in data.get("recordings", ())),
            updated_at=from_iso(data.get("updated_at")),
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> CallState:
        """Inverse of :meth:`to_json` (the read path)."""
        return cls.from_dict(orjson.loads(raw))


def iso(moment: datetime | None) -> str | None:
    """ISO 8601 UTC with ``Z`` (seconds: Twilio's times have no fraction)."""
    if moment is None:
        return None
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def from_iso(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)
