"""A fake Amazon SES v2 endpoint that verifies the SigV4 signature of every request it answers by default.

What SES does with a `Simple` message's `Headers` is modelled: at most 15, names and values in SES's
character sets, a value at most 995 characters, and the headers SES sets itself refused (400
BadRequestException). Every accepted send is kept in `sent` as the mail SES would deliver: its headers with
SES's own Message-ID, `<MessageId@REGION.amazonses.com>`.

The signature is recomputed with botocore's signer from what arrived on the wire (method, path, the signed
headers, the body, the `X-Amz-Date`), with the secret key the test generated; a mismatch gets SES's 403
`SignatureDoesNotMatch`. Scripted replies (throttling, MessageRejected ...) are answered as scripted.
"""

from __future__ import annotations

import hmac
import re
import secrets
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from tests.fakes.server import FakeServer, Recorded, Reply

SEND_PATH = "/v2/email/outbound-emails"
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request,"
    r" ?SignedHeaders=(?P<signed>[^,]+), ?Signature=(?P<sig>[0-9a-f]{64})$"
)


#: headers SES sets itself on a Simple or Templated message: a Headers entry naming one is refused
SES_OWN_HEADERS = frozenset(
    h.lower()
    for h in (
        "BCC", "CC", "Content-Disposition", "Content-Type", "Date", "From", "Message-ID", "MIME-Version",
        "Reply-To", "Return-Path", "Subject", "To",
    )
)  # fmt: skip
_HEADER_NAME = re.compile(r"^[!-9;-~]{1,126}$")
_HEADER_VALUE = re.compile(r"^[ -~]{1,995}$")


@dataclass(frozen=True)
class SentMail:
    """An accepted SendEmail as the recipient would see it: SES's Message-ID and the headers sent along."""

    message_id: str
    to: list[str]
    subject: str
    text: str
    headers: dict[str, str]


def generated_credentials() -> tuple[str, str]:
    """An access key id and secret in AWS's shapes, random per test run (never a real key)."""
    akid = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    return akid, secrets.token_urlsafe(30)


def ses_error(status: int, code: str, message: str) -> Reply:
    return Reply(
        status,
        orjson.dumps({"__type": code, "message": message}),
        headers={"x-amzn-ErrorType": f"{code}:http://internal.amazon.com/coral/com.amazonaws.sesv2/"},
        content_type="application/json",
    )


class FakeSes(FakeServer):
    def __init__(self, access_key_id: str, secret_access_key: str, region: str = "eu-west-1") -> None:
        super().__init__(default_reply=self._answer)
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.region = region
        self.verified: list[Recorded] = []
        self.rejected: list[str] = []
        self.sent: list[SentMail] = []

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def verify(self, req: Recorded) -> str | None:
        """None if `req` carries a valid SigV4 signature for our key, else why not."""
        match = _AUTH.match(req.headers.get("authorization", ""))
        if not match:
            return "missing or malformed Authorization"
        if match["akid"] != self.access_key_id:
            return "unknown access key"
        if match["region"] != self.region or match["service"] != "ses":
            return "wrong credential scope"
        amz_date = req.headers.get("x-amz-date", "")
        try:
            signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        except ValueError:
            return "bad X-Amz-Date"
        if abs((datetime.now(UTC) - signed_at).total_seconds()) > 300 or amz_date[:8] != match["date"]:
            return "signature expired or dated elsewhere"
        names = match["signed"].split(";")
        if "host" not in names or "x-amz-date" not in names:
            return "host and x-amz-date must be signed"
        url = f"http://127.0.0.1:{self.port}{req.path}" + (f"?{req.query}" if req.query else "")
        request = AWSRequest(
            method=req.method, url=url, data=req.body, headers={n: req.headers.get(n, "") for n in names}
        )
        request.context["timestamp"] = amz_date
        signer = SigV4Auth(Credentials(self.access_key_id, self.secret_access_key), "ses", self.region)
        canonical = signer.canonical_request(request)
        expected = signer.signature(signer.string_to_sign(request, canonical), request)
        if not hmac.compare_digest(expected, match["sig"]):
            return "signature does not match"
        return None

    def _answer(self, req: Recorded) -> Reply:
        problem = self.verify(req)
        if problem is not None:
            self.rejected.append(problem)
            return ses_error(403, "SignatureDoesNotMatch", problem)
        # the endpoint URL may carry a path prefix (a VPC endpoint, or one slot of the contract suite)
        if req.method != "POST" or not req.path.endswith(SEND_PATH):
            return ses_error(404, "NotFoundException", "no such operation")
        self.verified.append(req)
        try:
            body = orjson.loads(req.body)
        except orjson.JSONDecodeError:
            return ses_error(400, "BadRequestException", "the request body is not JSON")
        simple = (body.get("Content") or {}).get("Simple")
        headers: dict[str, str] = {}
        if simple is not None:
            problem = self._headers(simple.get("Headers") or [], headers)
            if problem is not None:
                return ses_error(400, "BadRequestException", problem)
        ses_id = f"0102-{uuid.uuid4()}"
        if simple is not None:
            self.sent.append(
                SentMail(
                    message_id=f"<{ses_id}@{self.region}.amazonses.com>",
                    to=list((body.get("Destination") or {}).get("ToAddresses") or []),
                    subject=simple["Subject"]["Data"],
                    text=simple["Body"]["Text"]["Data"],
                    headers=headers,
                )
            )
        return Reply(200, orjson.dumps({"MessageId": ses_id}), content_type="application/json")

    @staticmethod
    def _headers(entries: list[dict[str, Any]], into: dict[str, str]) -> str | None:
        """SES's checks of a Simple message's Headers (None = accepted, the headers put into `into`)."""
        if len(entries) > 15:
            return "at most 15 headers"
        for entry in entries:
            name, value = entry.get("Name"), entry.get("Value")
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                return f"invalid header name {name!r}"
            if not isinstance(value, str) or not _HEADER_VALUE.match(value):
                return f"invalid value of header {name}"
            if name.lower() in SES_OWN_HEADERS:
                return f"header {name} is set by SES"
            into[name] = value
        return None


def contract() -> Any:
    """tests/fakes/catalog.py's ContractFake for SES: each slot is a path prefix of the endpoint URL."""
    from tests.fakes.catalog import RETRY_AFTER_S, HttpContract

    akid, secret = generated_credentials()
    server = FakeSes(akid, secret).start()
    limited = ses_error(429, "TooManyRequestsException", "Maximum sending rate exceeded.")
    limited.headers["Retry-After"] = str(RETRY_AFTER_S)
    return HttpContract(
        server,
        path=lambda slot: f"/{slot}{SEND_PATH}",
        config_for=lambda slot, base, timeout_s: {
            "access_key_id": akid,
            "secret_access_key": secret,
            "region": server.region,
            "endpoint_url": f"{base}/{slot}",
            "from_address": "herald@example.com",
            "to": [f"{slot}@example.com"],
            "timeout_s": timeout_s,
        },
        replies={
            "rate_limited": limited,
            "unavailable": ses_error(500, "InternalFailure", "Internal failure"),
            "invalid": ses_error(400, "MessageRejected", "Email address is not verified."),
            "auth": ses_error(403, "UnrecognizedClientException", "The security token included is invalid."),
            "gone": ses_error(404, "NotFoundException", "Configuration set does not exist."),
        },
    )
