"""Re-splits of a signed callback: the other ways to cut its signed characters into pairs.

Twilio signs ``URL + name1 + value1 + name2 + value2 …`` over the pairs sorted, without separators
(docs/twilio.md, "The signature algorithm"). A *re-split* is another list of pairs whose sorted,
de-duplicated concatenation is the same string, so it carries the same valid
``X-Twilio-Signature``. :func:`resplits` generates:

* every **single-boundary** variant: one boundary between two tokens (name|value or value|name)
  moved to any other place between its neighbours (``CallDuratio=n42``, ``From=+1555F`` +
  ``romCity=…``);
* every **double-boundary** variant: the two boundaries around a name removed (two pairs merged:
  ``From=+15558675310FromCityOAKLAND``), or two boundaries put inside a value (a pair split in two:
  ``RecordingUrl=https://…`` + ``Recordings/RE…=…`` where the order allows it).

Only variants that keep the concatenation (checked here with a plain join, independently of
callstate's code) and differ from the original as a set of pairs are kept.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

Pairs = list[tuple[str, str]]


def _concatenation(pairs: Sequence[tuple[str, str]]) -> str:
    return "".join(name + value for name, value in sorted(set(pairs)))


def _cut(text: str, bounds: Sequence[int]) -> Pairs:
    """The pairs of ``text`` cut at ``bounds`` (0 and len(text) included; an odd number of tokens
    cannot happen: bounds come in name/value alternation)."""
    tokens = [text[start:end] for start, end in zip(bounds, bounds[1:], strict=False)]
    return list(zip(tokens[0::2], tokens[1::2], strict=True))


def _candidates(bounds: list[int]) -> Iterator[list[int]]:
    last = len(bounds) - 1
    # Single: move boundary i anywhere between its neighbours (an empty name or value is allowed:
    # Twilio sends empty values, and "=value" decodes to an empty name).
    for i in range(1, last):
        for position in range(bounds[i - 1], bounds[i + 1] + 1):
            if position != bounds[i]:
                yield bounds[:i] + [position] + bounds[i + 1 :]
    # Double, merge: token i is a name (i even, i > 0): drop its two boundaries, so it and its
    # value join the previous value.
    for i in range(2, last, 2):
        yield bounds[:i] + bounds[i + 2 :]
    # Double, split: two new boundaries inside value token i (odd), making a new pair of it.
    for i in range(1, last, 2):
        start, end = bounds[i], bounds[i + 1]
        for left in range(start + 1, end):
            for right in range(left, end):
                yield bounds[: i + 1] + [left, right] + bounds[i + 1 :]


def resplits(params: Sequence[tuple[str, str]]) -> list[Pairs]:
    """Every single- and double-boundary re-split of ``params`` that keeps its signature, each
    once, in a deterministic order."""
    pairs = sorted(set(params))
    text = _concatenation(pairs)
    bounds = [0]
    for name, value in pairs:
        bounds += [bounds[-1] + len(name), bounds[-1] + len(name) + len(value)]
    seen = {tuple(pairs)}
    found: list[Pairs] = []
    for candidate in _candidates(bounds):
        variant = _cut(text, candidate)
        key = tuple(sorted(set(variant)))
        if key not in seen and _concatenation(variant) == text:
            seen.add(key)
            found.append(variant)
    return found
