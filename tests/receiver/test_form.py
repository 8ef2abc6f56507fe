"""Tests of receiver.form: decoding form bodies and query strings."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl, quote, urlencode

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from callstate.errors import InvalidCallback
from receiver.form import parse_form
from tests.vectors import P_20

# Deterministic runs, nothing written to .hypothesis/; the file runs in about a second.
FAST = settings(max_examples=300, derandomize=True, database=None)

# Text that exercises the grammar: separators, '+', '%', NUL, non-ASCII and non-BMP characters.
TEXT = st.text(
    st.one_of(
        st.sampled_from(list("&=+%# ?/\x00é€😀𝄞")),
        st.characters(codec="utf-8"),
    ),
    max_size=12,
)
PAIRS = st.lists(st.tuples(TEXT, TEXT), max_size=8)


def find_all(data: bytes, needle: bytes) -> list[int]:
    """Every index of ``needle`` in ``data``."""
    return [index for index in range(len(data)) if data.startswith(needle, index)]


def is_escape(data: bytes, index: int) -> bool:
    """Whether the '%' at ``index`` starts a well-formed ``%XX`` escape."""
    digits = data[index + 1 : index + 3]
    return len(digits) == 2 and all(chr(byte) in "0123456789abcdefABCDEF" for byte in digits)


def outcome(parse: Callable[[bytes], list[tuple[str, str]]], data: bytes) -> list[tuple[str, str]] | str:
    """The pairs ``parse`` returns, or the reason of the InvalidCallback it raises."""
    try:
        return parse(data)
    except InvalidCallback as error:
        return error.reason


def reference_parse(data: bytes) -> list[tuple[str, str]]:
    """A plain, obviously correct decoder: the oracle for parse_form's fast path."""
    if not all(is_escape(data, index) for index in find_all(data, b"%")):
        raise InvalidCallback("form body has a malformed percent escape")

    def component(raw: bytes) -> str:
        raw = raw.replace(b"+", b" ")
        out = bytearray()
        index = 0
        while index < len(raw):
            if raw[index] == ord("%"):
                out.append(int(raw[index + 1 : index + 3], 16))
                index += 3
            else:
                out.append(raw[index])
                index += 1
        try:
            return out.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidCallback("form body is not valid UTF-8") from None

    pairs = []
    for segment in data.split(b"&"):
        if segment:
            name, _, value = segment.partition(b"=")
            pairs.append((component(name), component(value)))
    return pairs


class TestGrammar:
    def test_empty_body_gives_no_pairs(self) -> None:
        """An empty body decodes to an empty list."""
        assert parse_form(b"") == []

    def test_pairs_keep_their_order(self) -> None:
        """Pairs come out in body order, not sorted."""
        assert parse_form(b"b=2&a=1&c=3") == [("b", "2"), ("a", "1"), ("c", "3")]

    def test_repeated_names_are_all_kept(self) -> None:
        """Every occurrence of a repeated name is kept, values in body order."""
        assert parse_form(b"Digits=5678&Digits=1234&Digits=1234") == [
            ("Digits", "5678"),
            ("Digits", "1234"),
            ("Digits", "1234"),
        ]

    def test_empty_values_are_kept(self) -> None:
        """`a=&b` gives an empty value for both names."""
        assert parse_form(b"a=&b") == [("a", ""), ("b", "")]

    def test_empty_segments_are_skipped(self) -> None:
        """Empty segments between, before and after '&' yield nothing, as in parse_qsl."""
        assert parse_form(b"&a=1&&b=2&") == [("a", "1"), ("b", "2")]
        assert parse_form(b"&&&") == []

    def test_segment_splits_at_its_first_equals_sign(self) -> None:
        """`a=b=c` is the name `a` with the value `b=c`."""
        assert parse_form(b"a=b=c&d==") == [("a", "b=c"), ("d", "=")]

    def test_empty_name_is_kept(self) -> None:
        """`=v` and `=` are pairs with an empty name."""
        assert parse_form(b"=v&=") == [("", "v"), ("", "")]

    def test_plus_is_a_space_and_escaped_plus_is_a_plus(self) -> None:
        """'+' decodes to a space, %2B to a literal '+'."""
        assert parse_form(b"From=%2B14155551212&Body=a+b%2Bc") == [
            ("From", "+14155551212"),
            ("Body", "a b+c"),
        ]

    def test_escaped_separators_are_data(self) -> None:
        """%26 and %3D decode to '&' and '=' inside a value without splitting it."""
        assert parse_form(b"q=a%26b%3Dc&r=%25%32%36") == [("q", "a&b=c"), ("r", "%26")]

    def test_escapes_decode_as_utf8_in_either_hex_case(self) -> None:
        """Escaped UTF-8 (upper or lower case hex, up to 4 bytes) decodes to its characters."""
        assert parse_form(b"n=%C3%a9%e2%82%AC%F0%9F%98%80") == [("n", "é€😀")]

    def test_raw_utf8_is_accepted(self) -> None:
        """Unescaped UTF-8 bytes decode like escaped ones."""
        assert parse_form("name=José&city=東京".encode()) == [("name", "José"), ("city", "東京")]

    def test_nul_characters_are_kept(self) -> None:
        """NUL, raw or escaped, is an ordinary character of a name or value."""
        assert parse_form(b"a=x%00y&b\x00=\x00&c=%00") == [("a", "x\x00y"), ("b\x00", "\x00"), ("c", "\x00")]

    def test_control_characters_pass_through(self) -> None:
        """CR, LF and TAB are kept as sent."""
        assert parse_form(b"a=1\r\n2\t&b=%0D%0A") == [("a", "1\r\n2\t"), ("b", "\r\n")]

    def test_status_callback_query_decodes_to_its_parameters(self) -> None:
        """The GET query of reference vector #21 decodes to the POST parameters of #20."""
        query = (
            b"AccountSid=AC00000000000000000000000000000000&ApiVersion=2010-04-01"
            b"&CallSid=CA11111111111111111111111111111111&CallStatus=completed&CallDuration=42"
            b"&Called=%2B15005550006&CalledCity=&Caller=%2B15005550001&CallbackSource=call-progress-events"
            b"&Direction=outbound-api&From=%2B15005550001&SequenceNumber=3&SipResponseCode=200"
            b"&Timestamp=Tue%2C+01+Sep+2026+12%3A00%3A00+%2B0000&To=%2B15005550006&ToCountry=US"
        )
        assert parse_form(query) == P_20

    def test_64_kib_body_decodes_completely(self) -> None:
        """A body at the 64 KiB size limit decodes to every one of its pairs."""
        pairs = [(f"Param{index}", f"é+ {index}&=%") for index in range(1400)]
        prefix = urlencode(pairs).encode() + b"&Pad="
        pad = "x" * (64 * 1024 - len(prefix))
        body = prefix + pad.encode()
        assert len(body) == 64 * 1024
        assert parse_form(body) == [*pairs, ("Pad", pad)]


class TestErrors:
    @pytest.mark.parametrize(
        "body", [b"a=%zz", b"a=%4", b"a=1&b=%", b"a%g1=1", b"a=%4&b=1", b"%=1", b"a=%%41"]
    )
    def test_broken_escape_is_rejected(self, body: bytes) -> None:
        """A '%' not followed by two hex digits is a malformed escape, not literal text."""
        with pytest.raises(InvalidCallback) as info:
            parse_form(body)
        assert info.value.reason == "form body has a malformed percent escape"
        assert info.value.field is None

    @pytest.mark.parametrize(
        "body",
        [b"a=%C3", b"a=%FF", b"a=\xff", b"a=\xc3&b=\xa9", b"a=%C0%AF", b"a=%ED%A0%80", b"%C3=1"],
    )
    def test_invalid_utf8_is_rejected(self, body: bytes) -> None:
        """Bytes that are not UTF-8 after percent-decoding (truncated, overlong, surrogate) are refused."""
        with pytest.raises(InvalidCallback) as info:
            parse_form(body)
        assert info.value.reason == "form body is not valid UTF-8"
        assert info.value.field is None

    def test_invalid_utf8_is_rejected_when_the_body_holds_nul(self) -> None:
        """The per-component path taken for bodies containing NUL rejects invalid UTF-8 too."""
        with pytest.raises(InvalidCallback, match="not valid UTF-8"):
            parse_form(b"a=%00&b=%C3")

    def test_utf8_sequence_cannot_span_a_separator(self) -> None:
        """Half a character in a name and half in its value do not join into one character."""
        with pytest.raises(InvalidCallback, match="not valid UTF-8"):
            parse_form(b"%C3=%A9")

    def test_malformed_escape_is_reported_before_invalid_utf8(self) -> None:
        """With both faults in one body, the reason names the malformed escape."""
        with pytest.raises(InvalidCallback, match="malformed percent escape"):
            parse_form(b"a=%C3&b=%zz")


class TestProperties:
    @FAST
    @given(PAIRS)
    def test_urlencode_round_trips(self, pairs: list[tuple[str, str]]) -> None:
        """parse_form inverts urlencode's default quote_plus encoding."""
        assert parse_form(urlencode(pairs).encode("ascii")) == pairs

    @FAST
    @given(PAIRS)
    def test_urlencode_with_quote_round_trips(self, pairs: list[tuple[str, str]]) -> None:
        """parse_form inverts urlencode with quote_via=quote (%20 for spaces, '/' left as is)."""
        assert parse_form(urlencode(pairs, quote_via=quote).encode("ascii")) == pairs

    @FAST
    @given(st.text(st.sampled_from(list("ab=&+% \x00é😀0123456789ABCDEFabcdefC38Fz")), max_size=40))
    def test_agrees_with_parse_qsl(self, text: str) -> None:
        """Where parse_qsl decodes strictly, parse_form gives the same pairs; elsewhere it raises."""
        data = text.encode()
        try:
            expected = parse_qsl(text, keep_blank_values=True, errors="strict")
        except UnicodeDecodeError:
            expected = None
        if not all(is_escape(data, index) for index in find_all(data, b"%")):
            expected = None  # parse_qsl keeps a malformed escape as text; we refuse it
        if expected is None:
            with pytest.raises(InvalidCallback):
                parse_form(data)
        else:
            assert parse_form(data) == expected

    @FAST
    @given(
        st.lists(
            st.one_of(
                st.sampled_from([b"&", b"=", b"+", b"%", b"%2", b"%41", b"%3D", b"%26", b"%00", b"\x00"]),
                st.sampled_from([b"%C3%A9", b"%c3", b"\xc3\xa9", b"\xff", b"=3D", b"\r\n", b"_"]),
                st.binary(max_size=3),
            ),
            max_size=20,
        ).map(b"".join)
    )
    def test_agrees_with_a_plain_decoder_on_any_bytes(self, data: bytes) -> None:
        """On arbitrary bytes the fast decoder gives the plain decoder's pairs or its error."""
        assert outcome(parse_form, data) == outcome(reference_parse, data)
