"""The callback endpoints: a Twilio request in, a queued event and a 204 out.

Checks run cheapest first (docs/contracts.md, "Order of the checks"): size (413), content type (415),
signature (403), content (400); then the event is handed to the group commit and the 204 goes out only
once Redis has it (:class:`~callstate.errors.StoreUnavailable`, a 503, otherwise). Every refusal is raised
as a :class:`~callstate.errors.RequestRejected` and turned into HTTP by the app's handlers.

This is the hot path of the service, so it is a plain ASGI app rather than a Starlette endpoint: it
reads the few headers it needs in one pass over the raw list and sends a prebuilt 204, without
Request and Response objects; the app (:class:`receiver.app.Receiver`) calls it directly.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final, NoReturn

from starlette.types import Receive, Scope, Send

from callstate.errors import InvalidCallback, InvalidSignature, PayloadTooLarge, UnsupportedMediaType
from callstate.event import Kind, scan_callback, wire_event
from receiver.form import parse_form
from receiver.publicurl import public_url
from receiver.rejections import Attempt
from receiver.signature import SETTINGS_HEADER, verify

if TYPE_CHECKING:
    from receiver.resources import Resources

FORM: Final = "application/x-www-form-urlencoded"

#: Log fields of the current request, filled here, written by the app's RequestLog.
LOG: Final = "callstate.log"

_FORM_BYTES: Final = FORM.encode()
_SETTINGS: Final = SETTINGS_HEADER.lower().encode()
_WANTED: Final = frozenset(
    (b"content-length", b"content-type", b"x-twilio-signature", b"i-twilio-idempotency-token", _SETTINGS)
)
_NO_CONTENT: Final = {"type": "http.response.start", "status": 204, "headers": []}
_END: Final = {"type": "http.response.body", "body": b"", "more_body": False}


class CallbackEndpoint:
    """The ASGI app of ``/twilio/call-status`` (``kind="call"``) or ``/twilio/recording-status``
    (``kind="recording"``), for GET and POST, called by the app with the process's
    :class:`~receiver.resources.Resources`."""

    def __init__(self, kind: Kind) -> None:
        self.kind = kind

    async def __call__(self, resources: Resources, scope: Scope, receive: Receive, send: Send) -> None:
        settings = resources.settings
        log = scope.setdefault(LOG, {})
        log["kind"] = self.kind
        headers = {name: value for name, value in scope["headers"] if name in _WANTED}
        signature = headers.get(b"x-twilio-signature", b"").decode("latin-1")
        if scope["method"] == "POST":
            body = await _read_body(receive, headers.get(b"content-length"), settings.max_body_bytes)
            content_type = headers.get(b"content-type", b"").partition(b";")[0].strip().lower()
            if content_type != _FORM_BYTES:
                raise UnsupportedMediaType(f"callbacks must be {FORM}")
            if not signature:
                _unsigned(resources)
            params = _parse_signed(resources, body)
            signed = params
        else:
            if not signature:
                _unsigned(resources)
            # GET: Twilio appended the parameters to the URL and signed the whole URL (docs/twilio.md,
            # "GET requests"), so they are read from the query and no body parameters are signed.
            params = _parse_signed(resources, scope.get("query_string", b""))
            signed = []
        url = public_url(scope, settings.public_base_url, resources.trusted)
        fields, fault = scan_callback(self.kind, params)
        raw_settings = headers.get(_SETTINGS)
        signature_settings = None if raw_settings is None else raw_settings.decode("latin-1")
        account_sid = fields.get("AccountSid")
        try:
            verify(
                resources.keyring,
                url,
                signed,
                signature,
                account_sid=account_sid,
                signature_settings=signature_settings,
            )
        except InvalidSignature as error:
            # The refusal path only (an accepted callback never comes here): say why, now and then.
            attempt = Attempt(
                scope,
                url,
                settings.public_base_url,
                resources.trusted,
                resources.keyring,
                signed,
                signature,
                account_sid,
                signature_settings,
            )
            resources.rejections.report(error, attempt)
            raise
        if fault is not None:
            raise fault
        log["call_sid"] = fields.get("CallSid")
        log["callback_status"] = fields.get("CallStatus" if self.kind == "call" else "RecordingStatus")
        if self.kind == "recording":
            log["recording_sid"] = fields["RecordingSid"]
        token = headers.get(b"i-twilio-idempotency-token")
        await resources.commit.submit(
            wire_event(
                self.kind,
                params,
                received_at=time.time(),
                idempotency_token=token.decode("latin-1") if token is not None else None,
                tenant=resources.keyring.tenant(account_sid),
            )
        )
        await send(_NO_CONTENT)
        await send(_END)


def _unsigned(resources: Resources) -> NoReturn:
    error = InvalidSignature("X-Twilio-Signature header is missing", code="missing")
    resources.rejections.report(error, None)
    raise error


def _parse_signed(resources: Resources, data: bytes) -> list[tuple[str, str]]:
    """Decode the signed parameters. Undecodable ones cannot be checked against the signature
    (Twilio signs decoded values), so they are a 403 like any unverifiable request, not a 400."""
    try:
        return parse_form(data)
    except InvalidCallback as exc:
        error = InvalidSignature(f"signature cannot be verified: {exc.reason}", code="undecodable")
        resources.rejections.report(error, None)
        raise error from None


async def _read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes:
    """The body, or :class:`PayloadTooLarge` as soon as it is known to exceed ``limit``."""
    # A thousand-digit Content-Length is too large before it is a number (and int() refuses
    # over 4300 digits).
    if declared is not None and declared.isdigit() and (len(declared) > 12 or int(declared) > limit):
        raise PayloadTooLarge(f"body is over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            # Nobody will read the answer; the refusal is for the log line.
            raise InvalidCallback("the client disconnected before the body was complete")
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
