"""Compression of the stored call: zstd frames with dictionaries trained on Twilio callbacks.

A call's ``state`` (about 1,100 bytes of JSON) and its event set (about 650 bytes packed) are stored
as zstd frames made with a dictionary: a few hundred bytes each, since the dictionary already holds
what every call repeats (JSON names, statuses, Twilio's parameter tables and URLs). Each frame
names its dictionary by ID in its header, and the dictionaries are stored in Redis under
:func:`callstate.keys.dictionary` (workers write them at start-up), so a reader in any language
can inflate a value with nothing but Redis and a zstd library (docs/redis-schema.md,
"Compression").

The dictionaries ship in the package (``callstate/dictionaries/<id>.zdict``) and never change: a
better one is added under a new ID and the old one stays, so that every stored value can still be
read. They are trained by ``python -m bench.dictionaries`` on the simulator's traffic
(:mod:`callstate.traffic`).

zstandard rather than zlib's preset dictionary: on the bench's calls a trained 16 KB zstd
dictionary gives 204-byte states against 216 for DEFLATE with 32 KB of states as its dictionary,
inflates in under a microsecond, and names its dictionary in the frame.
"""

from __future__ import annotations

import functools
import threading
from importlib.resources import files
from typing import Final

import zstandard

from callstate.errors import UnreadableValue

#: The dictionary of ``state`` JSON (the call hash's ``state`` field).
STATE_DICTIONARY: Final = 32_769
#: The dictionary of event sets (the call hash's ``events`` field: callstate.eventset).
EVENTS_DICTIONARY: Final = 32_770
#: Every dictionary a stored value may name. IDs from 32,768 up are zstd's private range.
DICTIONARIES: Final = (STATE_DICTIONARY, EVENTS_DICTIONARY)

#: zstd's level 3 (its default): 2-3 us for a state; level 19 saves 15% more at 60 times the CPU.
LEVEL: Final = 3


@functools.cache
def dictionary_bytes(dictionary_id: int) -> bytes:
    """The dictionary ``dictionary_id`` as shipped (what workers store in Redis for readers)."""
    if dictionary_id not in DICTIONARIES:
        raise UnreadableValue(f"unknown dictionary {dictionary_id}")
    return files("callstate").joinpath("dictionaries", f"{dictionary_id}.zdict").read_bytes()


#: zstandard's compressors and decompressors must not be used by two threads at once (its
#: documentation; the read API decompresses on Starlette's thread pool, a worker's sweep beside its
#: jobs): each thread gets its own, made once.
_local = threading.local()


def _dictionary(dictionary_id: int) -> zstandard.ZstdCompressionDict:
    return zstandard.ZstdCompressionDict(dictionary_bytes(dictionary_id))


def _compressor(dictionary_id: int) -> zstandard.ZstdCompressor:
    made: dict[int, zstandard.ZstdCompressor] = _local.__dict__.setdefault("compressors", {})
    compressor = made.get(dictionary_id)
    if compressor is None:
        compressor = made[dictionary_id] = zstandard.ZstdCompressor(
            level=LEVEL, dict_data=_dictionary(dictionary_id), write_checksum=False, write_content_size=True
        )
    return compressor


def _decompressor(dictionary_id: int) -> zstandard.ZstdDecompressor:
    made: dict[int, zstandard.ZstdDecompressor] = _local.__dict__.setdefault("decompressors", {})
    decompressor = made.get(dictionary_id)
    if decompressor is None:
        decompressor = made[dictionary_id] = zstandard.ZstdDecompressor(dict_data=_dictionary(dictionary_id))
    return decompressor


def compress(data: bytes, dictionary_id: int) -> bytes:
    """``data`` as one zstd frame made with dictionary ``dictionary_id`` (named in its header).
    The same input always gives the same frame."""
    return _compressor(dictionary_id).compress(data)


def decompress(frame: bytes) -> bytes:
    """The data of one frame made by :func:`compress` with any of :data:`DICTIONARIES`."""
    try:
        dictionary_id = zstandard.get_frame_parameters(frame).dict_id
        if dictionary_id not in DICTIONARIES:
            raise UnreadableValue(f"a frame made with unknown dictionary {dictionary_id}")
        return _decompressor(dictionary_id).decompress(frame)
    except zstandard.ZstdError as exc:
        raise UnreadableValue(f"not a zstd frame of callstate's: {exc}") from exc


def state_json(stored: bytes) -> bytes:
    """The JSON of a call's stored ``state`` field: a zstd frame, or JSON as schema 2 stored it (a
    call not rewritten since its store was upgraded: docs/redis-schema.md, "Upgrading")."""
    return stored if is_legacy_state(stored) else decompress(stored)


def is_legacy_state(stored: bytes) -> bool:
    """Whether a stored ``state`` is schema 2's JSON (an object) rather than a zstd frame."""
    return stored[:1] == b"{"


def store_state(state_json: bytes) -> bytes:
    """What the call hash's ``state`` field holds for ``state_json``."""
    return compress(state_json, STATE_DICTIONARY)
