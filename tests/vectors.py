"""Inputs of the signature vectors (docs/twilio.md, "Signature vectors") that more than one test
module uses."""

from __future__ import annotations

#: Vector #20: a realistic terminal StatusCallback (token "12345", URL_20 below).
URL_20 = "https://example.com/twilio/status?tenant=acme"

P_20 = [
    ("AccountSid", "AC00000000000000000000000000000000"),
    ("ApiVersion", "2010-04-01"),
    ("CallSid", "CA11111111111111111111111111111111"),
    ("CallStatus", "completed"),
    ("CallDuration", "42"),
    ("Called", "+15005550006"),
    ("CalledCity", ""),
    ("Caller", "+15005550001"),
    ("CallbackSource", "call-progress-events"),
    ("Direction", "outbound-api"),
    ("From", "+15005550001"),
    ("SequenceNumber", "3"),
    ("SipResponseCode", "200"),
    ("Timestamp", "Tue, 01 Sep 2026 12:00:00 +0000"),
    ("To", "+15005550006"),
    ("ToCountry", "US"),
]
