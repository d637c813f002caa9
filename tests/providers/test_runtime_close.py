"""workers/runtime.py's close calls every provider's `aclose`: SMTP connections and APNs' HTTP/2 client go.

Repro before the fix: close() only closed the shared aiohttp session; the SMTP provider's cached connection and
APNs' HTTP/2 pool stayed open until the process died (no QUIT, no GOAWAY)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from providers.apns import ApnsConfig
from providers.email_smtp import SmtpConfig
from shared.config import get_settings
from shared.crypto import generate_key_spec
from tests.fakes.apns import KEY_ID, TEAM_ID, FakeApns, device_token, generated_p8
from tests.fakes.smtp import PASSWORD, USERNAME, FakeSmtp, TlsFiles, make_tls
from tests.providers.test_smtp import MESSAGE
from workers.runtime import get_runtime, shutdown_runtime

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("runtime-tls"))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tls: TlsFiles) -> Iterator[None]:
    monkeypatch.setenv("HERALD_EGRESS_ALLOW_CIDRS", "127.0.0.1/32")
    monkeypatch.setenv("HERALD_TLS_CA_FILE", tls.ca_file)
    monkeypatch.setenv("HERALD_ENCRYPTION_KEYS", generate_key_spec("t1"))
    shutdown_runtime()
    get_settings.cache_clear()  # the runtime reads the (cached) process settings
    yield
    shutdown_runtime()
    get_settings.cache_clear()


def test_close_closes_smtp_connections_and_the_http2_client(env: None, tls: TlsFiles):
    p8, public_key = generated_p8()
    with FakeSmtp(tls) as smtp, FakeApns(tls, public_key) as apns:
        runtime = get_runtime()
        mail = runtime.provider("smtp")
        push = runtime.provider("apns")
        smtp_config = SmtpConfig.model_validate(
            {
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "starttls",
                "username": USERNAME,
                "password": PASSWORD,
                "from_address": "h@example.com",
                "to": ["a@example.com"],
            }
        )
        apns_config = ApnsConfig.model_validate(
            {
                "team_id": TEAM_ID,
                "key_id": KEY_ID,
                "private_key": p8,
                "topic": apns.topic,
                "endpoint_url": apns.endpoint_url,
                "device_tokens": [device_token()],
            }
        )
        runtime.run(mail.send(MESSAGE, smtp_config, idempotency_key="d-1", previous_ref=None))
        runtime.run(push.send(MESSAGE, apns_config, idempotency_key="d-2", previous_ref=None))
        assert mail.open_connections == 1  # type: ignore[attr-defined]
        assert push._http2 is not None  # type: ignore[attr-defined]
        shutdown_runtime()
        assert mail.open_connections == 0  # type: ignore[attr-defined]
        assert push._http2 is None  # type: ignore[attr-defined]
