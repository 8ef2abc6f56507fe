"""Twilio's parameter names, and the re-splits of a signed callback they let us recognise.

Twilio signs ``URL + name1 + value1 + name2 + value2 …`` (pairs sorted, no separators:
docs/twilio.md, "The signature algorithm"), so the signature does not fix where a name ends and its
value begins. Anyone holding one genuine signed callback can send another split of the same
characters that sorts the same way (``CallDuratio=n42``, ``From=+15558675310FromCityOAKLAND``)
under the same signature. Two defences
live here, both pure (docs/redis-schema.md, "Re-splits"):

* :func:`cut_short` finds a pair whose name is a known Twilio name cut short, with the cut-off rest
  at the start of its value (``CallDuratio=n42``, ``From=CitySF`` for ``FromCity=SF``): the
  receiver refuses such a callback (400). Twilio never sends one: no genuine value starts with the
  missing rest of a longer Twilio name.
* :func:`signed_concatenation` is what every re-split of one callback has in common, so the store
  keeps one event per signed concatenation, and :func:`genuineness` ranks the splits of it: the
  split Twilio made names the most distinct Twilio parameters with values of the shape Twilio
  gives them, since moving a boundary breaks the name or the value on at least one side of it
  (``SequenceNumber=1`` + ``SomeFutureParam=x`` merged into ``SequenceNumber=1SomeFutureParamx``
  keeps every known name but breaks a number).

Unknown names are never refused: Twilio adds parameters without notice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from operator import eq
from typing import Final

#: Every parameter Twilio documents for call-status and recording-status callbacks (docs/twilio.md,
#: "Status callback parameters" and "Recording callbacks"), plus the answering-machine and
#: inbound-request ones seen in practice.
KNOWN: Final = frozenset(
    (
        "AccountSid",
        "AddOns",
        "AnsweredBy",
        "ApiVersion",
        "CallDuration",
        "CallSid",
        "CallStatus",
        "CallToken",
        "CallbackSource",
        "Called",
        "CalledCity",
        "CalledCountry",
        "CalledState",
        "CalledVia",
        "CalledZip",
        "Caller",
        "CallerCity",
        "CallerCountry",
        "CallerName",
        "CallerState",
        "CallerZip",
        "ConferenceSid",
        "Digits",
        "Direction",
        "Duration",
        "ErrorCode",
        "ErrorMessage",
        "ForwardedFrom",
        "From",
        "FromCity",
        "FromCountry",
        "FromState",
        "FromZip",
        "MachineDetectionDuration",
        "ParentCallSid",
        "QueueTime",
        "RecordingChannels",
        "RecordingDuration",
        "RecordingSid",
        "RecordingSource",
        "RecordingStartTime",
        "RecordingStatus",
        "RecordingTrack",
        "RecordingUrl",
        "SequenceNumber",
        "SipResponseCode",
        "StirPassportToken",
        "StirStatus",
        "StirVerstat",
        "Timestamp",
        "To",
        "ToCity",
        "ToCountry",
        "ToState",
        "ToZip",
        "TrunkSid",
    )
)


_DIGITS: Final = re.compile(r"\d{1,18}")
_WORD: Final = re.compile(r"[a-z][a-z_-]*")
_TIME: Final = re.compile(r"[A-Z][a-z]{2}, \d\d [A-Z][a-z]{2} \d{4} \d\d:\d\d:\d\d [+-]\d{4}")
#: ``+`` and digits (E.164), ``client:<identity>``, ``sip:<uri>``, or a raw string without
#: separators (``anonymous``, ``266696687``): what Twilio sends in From/To (docs/twilio.md,
#: "Status callback parameters").
_ADDRESS: Final = re.compile(r"\+\d{1,15}|client:\S+|sip:\S+|[0-9A-Za-z*#]*")
_GEO: Final = re.compile(r"[A-Z0-9 .,'-]*")

#: The shape of the values Twilio gives some of its parameters (docs/twilio.md, "Status callback
#: parameters" and "Recording callbacks"): a
#: re-split that moves characters into or out of such a value breaks its shape. Names not listed
#: take any value.
SHAPES: Final[Mapping[str, re.Pattern[str]]] = {
    "AccountSid": re.compile(r"AC[0-9a-fA-F]{32}"),
    "CallSid": re.compile(r"CA[0-9a-fA-F]{32}"),
    "ParentCallSid": re.compile(r"CA[0-9a-fA-F]{32}"),
    "RecordingSid": re.compile(r"RE[0-9a-fA-F]{32}"),
    "ConferenceSid": re.compile(r"CF[0-9a-fA-F]{32}"),
    "TrunkSid": re.compile(r"TK[0-9a-fA-F]{32}"),
    "ApiVersion": re.compile(r"\d{4}-\d\d-\d\d"),
    "CallStatus": _WORD,
    "RecordingStatus": _WORD,
    "Direction": _WORD,
    "CallbackSource": _WORD,
    "AnsweredBy": _WORD,
    "SequenceNumber": _DIGITS,
    "CallDuration": _DIGITS,
    "Duration": _DIGITS,
    "SipResponseCode": _DIGITS,
    "RecordingDuration": _DIGITS,
    "RecordingChannels": _DIGITS,
    "ErrorCode": _DIGITS,
    "QueueTime": _DIGITS,
    "MachineDetectionDuration": _DIGITS,
    "Timestamp": _TIME,
    "RecordingStartTime": _TIME,
    "RecordingUrl": re.compile(r"https://[!-~]+/RE[0-9a-fA-F]{32}(?:\.[a-z0-9]+)?"),
    "RecordingTrack": _WORD,
    "StirStatus": re.compile(r"[A-C]?"),
    **dict.fromkeys(("From", "To", "Caller", "Called", "ForwardedFrom"), _ADDRESS),
    **{
        prefix + part: _GEO
        for prefix in ("From", "To", "Caller", "Called")
        for part in ("City", "State", "Zip", "Country")
    },
}


def _rests(names: Iterable[str]) -> dict[str, dict[str, tuple[str, ...]]]:
    """Proper prefix -> first character of a rest -> the rests that complete the prefix to a known
    name (``"From"`` -> ``"C"`` -> ``("City", "Country")``, …)."""
    rests: dict[str, dict[str, set[str]]] = {}
    for name in names:
        for cut in range(1, len(name)):
            rests.setdefault(name[:cut], {}).setdefault(name[cut], set()).add(name[cut:])
    return {
        prefix: {first: tuple(sorted(found)) for first, found in by_first.items()}
        for prefix, by_first in rests.items()
    }


#: Keyed by the rest's first character too, so that a genuine value (``From=+1…``) costs one probe.
_RESTS: Final[Mapping[str, Mapping[str, tuple[str, ...]]]] = _rests(KNOWN)
#: Every proper prefix of a known name: the only names :func:`cut_short` can find anything in.
PREFIXES: Final = frozenset(_RESTS)


def cut_short(name: str, value: str) -> str | None:
    """The known name that ``name=value`` is a re-split of (its name cut short, the rest moved into
    the value), or ``None``. ``("CallDuratio", "n42")`` -> ``"CallDuration"``."""
    by_first = _RESTS.get(name)
    if by_first is not None:
        for rest in by_first.get(value[:1], ()):
            if value.startswith(rest):
                return name + rest
    return None


def signed_concatenation(params: Iterable[tuple[str, str]]) -> str:
    """``name + value`` of the distinct pairs in sorted order: the part of the string to sign that
    the parameters contribute (receiver.signature signs it). Every re-split of a callback has the
    same one."""
    ordered = sorted(params)
    # Twilio sends its parameters sorted, so sorting is one pass; a repeated pair is rare, and
    # looking for one beside its twin costs less than hashing every value into a set (about 1 us
    # of a callback's CPU: bench/RESULTS.md, "Micro-measurements").
    if any(map(eq, ordered, islice(ordered, 1, None))):
        ordered = sorted(set(ordered))
    return "".join([name + value for name, value in ordered])


#: What Twilio's parameter names look like (``CallSid``, ``AddOns``, ``StirVerstat``).
_TWILIO_NAME: Final = re.compile(r"(?:[A-Z][a-z0-9]+)+")


def genuineness(params: Sequence[tuple[str, str]]) -> tuple[int, int, int]:
    """How much a split of a signed concatenation looks like Twilio's own (module docstring); of
    the splits of one callback, Twilio's own is the greatest. Three numbers, compared in order:

    1. the distinct known names with a value of their shape (:data:`SHAPES`), less the repeats of
       known names: Twilio never repeats its names, while a re-split of ``From=…`` +
       ``FromCounty=…`` (a name we do not know yet) into two ``From`` pairs does;
    2. the distinct unknown names shaped like Twilio's: merging ``SomeFutureParam=x`` into the
       free-form value before it keeps every known name and shape but loses this one;
    3. minus the number of pairs: cutting a new pair out of a free-form value adds one, and the
       new name, made of value characters, rarely looks like Twilio's.
    """
    known: set[str] = set()
    unknown: set[str] = set()
    score = 0
    for name, value in params:
        if name not in KNOWN:
            if _TWILIO_NAME.fullmatch(name):
                unknown.add(name)
            continue
        if name in known:
            score -= 1
            continue
        known.add(name)
        shape = SHAPES.get(name)
        if shape is None or shape.fullmatch(value):
            score += 1
    return score, len(unknown), -len(params)
