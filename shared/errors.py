"""The delivery error taxonomy: what a provider attempt can end in, and what the worker does about it.

```
DeliveryError(provider, status_code, detail)
 ├── RetryableError           -> retry on the schedule in workers/retry.py
 │    ├── RateLimited(retry_after_s)
 │    ├── ProviderUnavailable  5xx, connection refused/reset, 408/425
 │    └── TransportTimeout
 └── PermanentError           -> dead letter at once, no retries
      ├── InvalidPayload       400/413/422 and vendor equivalents, 3xx (never followed)
      ├── AuthFailed           401/403, revoked tokens          also marks the integration failing
      ├── TargetGone           404/410, archived channel, unregistered device token   likewise
      ├── EgressDenied         destination is (or resolves to) a non-public address not allow-listed, or a
      │                        numeric host in a non-canonical form (2130706434, 127.2, ①②⑦.0.0.1)   likewise
      └── InvalidConfig        the config cannot work as it is: a malformed URL, a server certificate we do
                               not trust (expired, self-signed, wrong name)                      likewise
```

Transport failures are classified in providers/_http.py, mechanism first (what happened: refused, reset, DNS
name not found, TLS untrusted, TLS handshake, timeout, malformed URL, egress denied), then one policy function
maps the mechanism to a class above, the same for HTTP/1.1, HTTP/2 and SMTP.

Anything raised by a provider that is not a `DeliveryError` is our bug: the worker dead-letters it with reason
`internal_error` and logs the traceback. `detail` must never carry a secret (URLs with tokens, keys).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class DeliveryError(Exception):
    """One failed provider attempt, classified."""

    #: short machine-readable name stored in `attempt.error_class` and `delivery.dead_reason`
    code = "delivery_error"
    retryable = False
    #: whether this outcome marks the integration as failing (it stays enabled)
    marks_failing = False

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status_code: int | None = None,
        response_excerpt: str | None = None,
        target_progress: Mapping[str, str] | None = None,
        removed_targets: Sequence[str] = (),
    ) -> None:
        super().__init__(f"{provider}: {detail}" + (f" (HTTP {status_code})" if status_code else ""))
        self.provider = provider
        self.detail = detail
        self.status_code = status_code
        #: the vendor's answer, capped and redacted by providers/_http.py
        self.response_excerpt = response_excerpt
        #: multi-target providers (device tokens, recipients): target -> outcome so far; a retry skips the
        #: targets marked "delivered"
        self.target_progress = dict(target_progress or {})
        #: targets the vendor says are gone for good (an unregistered device token): dropped from the config
        self.removed_targets = tuple(removed_targets)


class RetryableError(DeliveryError):
    code = "retryable"
    retryable = True


class RateLimited(RetryableError):
    code = "rate_limited"

    def __init__(
        self,
        provider: str,
        detail: str,
        *,
        status_code: int | None = None,
        response_excerpt: str | None = None,
        retry_after_s: float | None = None,
        target_progress: Mapping[str, str] | None = None,
        removed_targets: Sequence[str] = (),
    ) -> None:
        super().__init__(
            provider,
            detail,
            status_code=status_code,
            response_excerpt=response_excerpt,
            target_progress=target_progress,
            removed_targets=removed_targets,
        )
        self.retry_after_s = retry_after_s


class ProviderUnavailable(RetryableError):
    code = "provider_unavailable"


class TransportTimeout(RetryableError):
    code = "timeout"


class PermanentError(DeliveryError):
    code = "permanent"


class InvalidPayload(PermanentError):
    code = "invalid_payload"


class AuthFailed(PermanentError):
    code = "auth_failed"
    marks_failing = True


class TargetGone(PermanentError):
    code = "target_gone"
    marks_failing = True


class EgressDenied(PermanentError):
    code = "egress_denied"
    marks_failing = True


class InvalidConfig(PermanentError):
    """A config that cannot work until someone changes it (or the destination's certificate): not retried."""

    code = "invalid_config"
    marks_failing = True


#: reason recorded when a provider raised something that is not a DeliveryError (our bug)
INTERNAL_ERROR = "internal_error"
#: reason recorded when the schedule is used up
ATTEMPTS_EXHAUSTED = "attempts_exhausted"
