"""Amazon SES v2 `SendEmail` through our HTTP client, signed with botocore's SigV4 signer.

botocore only signs here (`SigV4Auth`, service `ses`): the request goes out through providers/_http.py like
every other vendor call (egress policy, no redirects, one attempt), so boto3's own retries never run.

Threading (one thread per lifecycle, providers/templates/email_thread.py): a state after the first carries
`In-Reply-To` and `References` as `Content.Simple.Headers` (SES v2 adds them to the mail; it refuses only the
headers it sets itself, and takes at most 995 characters per value, the chain's cap). SES replaces any
Message-ID with its own, `<MessageId@REGION.amazonses.com>` (`email.amazonses.com` in us-east-1), so that is the
id the kept chain ends with; `message_id_domain` overrides the domain where SES uses another.

Errors (rest-json: `x-amzn-ErrorType` header, or `__type`/`code` in the body):
- 429 TooManyRequestsException, Throttling*, 5xx: retryable;
- MessageRejected, BadRequestException, LimitExceededException: invalid payload (permanent);
- MailFromDomainNotVerifiedException, AccountSuspendedException, SendingPausedException: permanent and the
  integration is marked failing (AuthFailed): every send fails until someone fixes the account;
- 403 signature/credential errors: auth failed; 404 NotFoundException: target gone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import urlsplit

import orjson
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from pydantic import BaseModel, Field, SecretStr, field_validator

from providers._http import HttpResponse, classify_status, excerpt, parse_retry_after
from providers.base import Provider, Receipt, attempt_deadline, egress_url, secret_values
from providers.templates import EmailConfig, EmailContent, email_thread, render_email
from shared.errors import AuthFailed, InvalidPayload, RateLimited
from shared.rendering import RenderedMessage

NAME = "ses"
SEND_PATH = "/v2/email/outbound-emails"
THROTTLED = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException", "RequestTimeout"})
ACCOUNT_BLOCKED = frozenset(
    {"MailFromDomainNotVerifiedException", "AccountSuspendedException", "SendingPausedException"}
)
REJECTED = frozenset({"MessageRejected", "BadRequestException", "LimitExceededException"})
# Headers aiohttp sets on its own; signing them would only risk a mismatch (SigV4 skips user-agent anyway).
_UNSIGNED = {"user-agent", "content-length", "accept-encoding", "accept"}


class SesConfig(EmailConfig):
    """Seed 003's "Configure SES": access key, secret key, region, send-from (the name is the integration's)."""

    access_key_id: str = Field(pattern=r"^[A-Z0-9]{16,128}$")
    secret_access_key: SecretStr
    #: for temporary credentials (STS); sent as X-Amz-Security-Token
    session_token: SecretStr | None = None
    region: str = Field(pattern=r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
    #: None = https://email.{region}.amazonaws.com; set for a VPC endpoint or a local fake
    endpoint_url: str | None = Field(None, max_length=2048)
    configuration_set: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: None = the domain SES gives the Message-ID in `region`; set if SES says otherwise (another partition)
    message_id_domain: str | None = Field(None, pattern=r"^[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})+$")

    _egress = field_validator("endpoint_url")(egress_url)

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("endpoint_url must be an http(s) URL without query or fragment")
        return value.rstrip("/")

    def url(self) -> str:
        base = self.endpoint_url or f"https://email.{self.region}.amazonaws.com"
        return base + SEND_PATH

    def message_id(self, ses_message_id: str) -> str:
        """The Message-ID header SES gave the mail it accepted as `ses_message_id`."""
        domain = self.message_id_domain or (
            "email.amazonses.com" if self.region == "us-east-1" else f"{self.region}.amazonses.com"
        )
        return f"<{ses_message_id}@{domain}>"


def send_email_body(
    content: EmailContent, config: SesConfig, *, thread_ref: str | None = None
) -> dict[str, Any]:
    """The SendEmail request; `thread_ref` (the kept reference of the lifecycle's shown mail) makes the mail a
    reply in that thread."""
    body: dict[str, Any] = {
        "FromEmailAddress": config.from_address,
        "Destination": {"ToAddresses": config.to, **({"CcAddresses": config.cc} if config.cc else {})},
        "Content": {
            "Simple": {
                "Subject": {"Data": content.subject, "Charset": "UTF-8"},
                "Body": {
                    "Text": {"Data": content.text, "Charset": "UTF-8"},
                    "Html": {"Data": content.html, "Charset": "UTF-8"},
                },
            }
        },
    }
    if headers := email_thread.reply_headers(thread_ref):
        body["Content"]["Simple"]["Headers"] = [{"Name": k, "Value": v} for k, v in headers.items()]
    if config.reply_to:
        body["ReplyToAddresses"] = [config.reply_to]
    if config.configuration_set:
        body["ConfigurationSetName"] = config.configuration_set
    return body


def signed_headers(config: SesConfig, url: str, body: bytes) -> dict[str, str]:
    """The headers of a SigV4-signed POST of `body` to `url` (botocore computes the signature)."""
    credentials = Credentials(
        config.access_key_id,
        config.secret_access_key.get_secret_value(),
        config.session_token.get_secret_value() if config.session_token else None,
    )
    request = AWSRequest(method="POST", url=url, data=body, headers={"Content-Type": "application/json"})
    SigV4Auth(credentials, "ses", config.region).add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() not in _UNSIGNED}


def error_code(response: HttpResponse) -> str | None:
    """The AWS error code of a rest-json error answer, if it names one."""
    raw = response.headers.get("x-amzn-errortype")
    if not raw:
        try:
            data = orjson.loads(response.body)
        except orjson.JSONDecodeError:
            return None
        raw = (data.get("__type") or data.get("code") or data.get("Code")) if isinstance(data, dict) else None
    if not isinstance(raw, str) or not raw:
        return None
    # "Code:http://internal.amazon.com/...", "com.amazonaws.ses#Code": the code is the bare name
    code = raw.split(":", 1)[0].rsplit("#", 1)[-1]
    return code if re.fullmatch(r"[A-Za-z0-9_.]{1,100}", code) else None


class SesProvider(Provider[SesConfig]):
    name: ClassVar[str] = NAME
    config_model: ClassVar[type[BaseModel]] = SesConfig

    def preview(self, message: RenderedMessage, config: SesConfig) -> dict[str, Any]:
        content = render_email(message, subject_prefix=config.subject_prefix)
        return {**content.as_dict(), "request": send_email_body(content, config)}

    async def send(
        self,
        message: RenderedMessage,
        config: SesConfig,
        *,
        idempotency_key: str,
        previous_ref: str | None,
        progress: Mapping[str, str] | None = None,
        deadline: float | None = None,
    ) -> Receipt:
        deadline = attempt_deadline(config, deadline)
        content = render_email(message, subject_prefix=config.subject_prefix)
        thread_ref = previous_ref if message.lifecycle_key else None
        body = orjson.dumps(send_email_body(content, config, thread_ref=thread_ref))
        url = config.url()
        response = await self.http.request(
            "POST",
            url,
            provider=NAME,
            body=body,
            headers=signed_headers(config, url, body),
            timeout_s=config.timeout_s,
            deadline=deadline,
        )
        secrets = list(secret_values(config))
        if not 200 <= response.status < 300:
            _raise_for(response, secrets)
        try:
            message_id = orjson.loads(response.body).get("MessageId")
        except (orjson.JSONDecodeError, AttributeError):
            message_id = None
        ref = message_id if isinstance(message_id, str) and message_id else None
        if ref is not None and message.lifecycle_key and email_thread.is_message_id(config.message_id(ref)):
            # A lifecycle's next state replies to this mail: the thread so far is the reference kept.
            ref = email_thread.kept_ref(thread_ref, config.message_id(ref))
        return Receipt(
            provider_ref=ref,
            status_code=response.status,
            response_excerpt=excerpt(response.body, secrets),
        )


def _raise_for(response: HttpResponse, secrets: list[str]) -> None:
    code = error_code(response)
    kwargs: dict[str, Any] = {
        "status_code": response.status,
        "response_excerpt": excerpt(response.body, secrets),
    }
    detail = code or f"HTTP {response.status}"
    if response.status == 429 or response.status >= 500:
        classify_status(NAME, response, secrets=secrets, detail=detail)  # Retry-After honoured there
    if code in THROTTLED:  # e.g. SES v1-style "Throttling" on a 400
        retry_after_s = parse_retry_after(response.headers.get("retry-after"))
        raise RateLimited(NAME, f"throttled ({code})", retry_after_s=retry_after_s, **kwargs)
    if code in ACCOUNT_BLOCKED:
        raise AuthFailed(NAME, f"account cannot send ({code})", **kwargs)
    if code in REJECTED:
        raise InvalidPayload(NAME, f"message rejected ({code})", **kwargs)
    classify_status(NAME, response, secrets=secrets, detail=detail)
