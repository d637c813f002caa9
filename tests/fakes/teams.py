"""A Microsoft Teams fake speaking reference/provider-protocols.md §3: a Workflows trigger and a legacy connector.

- `POST /workflows/<slot>/triggers/manual/paths/invoke`: 202 with an empty body for a `message` envelope holding
  an Adaptive Card; 400 otherwise (Workflows' error bodies are undocumented; this one is JSON).
- `POST /webhookb2/<slot>`: the legacy connector. 200 with body `1`; 400 "Summary or Text is required." for an
  empty card; bodies over 28 KB and throttling come back as HTTP 200 with "... HTTP error 413/429 ..." in the body,
  as the real connector does.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.server import FakeServer, Recorded, Reply

CONNECTOR_MAX_BYTES = 28 * 1024
#: the shape of a real Workflows `sig` (43 base64url characters): the URL's credential
SIG = "Fq3kX9vB2mZr7TnW1yPq8LsD4hJc6GaE0uRiOoK5xVt"


def connector_error(status: int) -> Reply:
    """The connector's way of failing: HTTP 200 with the real status inside the text."""
    return Reply(
        200,
        f"Microsoft Teams endpoint returned HTTP error {status} with ContextId "
        "tcid=0,server=msgapi-production-weu-02,cv=FAKE.0",
    )


def workflows_error(status: int, code: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        status,
        json.dumps({"error": {"code": code, "message": f"fake workflows error {code}"}}),
        headers=headers or {},
        content_type="application/json",
    )


def card_of(body: Any) -> dict[str, Any] | None:
    """The Adaptive Card in a `message` envelope, or None if the body is not one."""
    if not isinstance(body, dict) or body.get("type") != "message":
        return None
    attachments = body.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return None
    first = attachments[0]
    if first.get("contentType") != "application/vnd.microsoft.card.adaptive":
        return None
    content = first.get("content")
    if not isinstance(content, dict) or content.get("type") != "AdaptiveCard" or not content.get("body"):
        return None
    return content


class TeamsFake(FakeServer):
    def __init__(self) -> None:
        super().__init__(self._answer)

    @staticmethod
    def workflows_path(slot: str) -> str:
        return f"/workflows/{slot}/triggers/manual/paths/invoke"

    @classmethod
    def workflows_target(cls, slot: str) -> str:
        """Path and query of a Workflows trigger URL (the `sig` parameter is its credential)."""
        return (
            cls.workflows_path(slot)
            + "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig="
            + SIG
        )

    def workflows_url(self, slot: str) -> str:
        return self.url(self.workflows_target(slot))

    @staticmethod
    def connector_path(slot: str) -> str:
        return f"/webhookb2/{slot}@tenant/IncomingWebhook/abc123/def456"

    def connector_url(self, slot: str) -> str:
        return self.url(self.connector_path(slot))

    def _answer(self, request: Recorded) -> Reply:
        try:
            body = json.loads(request.body)
        except ValueError:
            body = None
        card = card_of(body)
        if request.path.startswith("/webhookb2/"):
            if len(request.body) > CONNECTOR_MAX_BYTES:
                return connector_error(413)
            if card is None:
                return Reply(400, "Summary or Text is required.")
            return Reply(200, "1")
        if request.path.startswith("/workflows/"):
            if card is None:
                return workflows_error(400, "InvalidTemplate")
            return Reply(202, b"")
        return Reply(404, b"")
