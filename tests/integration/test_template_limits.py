"""Webhook payload templates against the real API and worker: limits at save time and in the dry run, and a
heavy render that does not stall the worker's shared send loop (issue 10, "Templates (security)")."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.fakes.server import FakeServer
from tests.integration.stack import (
    AUTH,
    Stack,
    create_webhook,
    post_release,
    wait_for_deliveries,
    wait_until,
)

pytestmark = pytest.mark.integration

# Heavy only for an event whose description is "heavy": the sample render it is checked with when saved stays
# small, as would a template whose work depends on the event.
HEAVY_LOOPS = (
    "{% if description == 'heavy' %}{% for k in range(6) %}{% for i in range(1000) %}{% for j in range(1000) %}"
    "{% endfor %}{% endfor %}{% endfor %}{% endif %}done {{ version }}"
)


def test_a_template_over_the_limits_is_refused_when_saved(api):
    r = api.post(
        "/v1/integrations",
        headers=AUTH,
        json={
            "name": f"hook-{uuid.uuid4().hex[:6]}",
            "provider": "webhook",
            "config": {
                "url": "https://hooks.example/x",
                "template": json.dumps({"a": "{{ '%50000000s' % 1 }}"}),
            },
        },
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error_code"] == "invalid_config"
    assert "template_limit" in body["error"]


def test_explain_answers_a_heavy_template_with_the_limit_error(api, receiver: FakeServer, project: str):
    """Repro before the fix: the explain preview of this template rendered 6 x 10^6 loop steps inside the API
    (and `'x' * 10**7` built the whole string before the size check)."""
    template = json.dumps({"a": HEAVY_LOOPS, "b": "{{ title * (10**7 if description == 'heavy' else 1) }}"})
    hook = create_webhook(api, receiver.url(f"/explain-heavy/{project}"), project=project, template=template)
    event = {"type": "release.created", "project": project, "environment": "prod", "version": "2.0.0"}

    def preview(description: str) -> dict:
        r = api.post(
            "/v1/routes/explain",
            headers=AUTH,
            json={"kind": "release", "event": {**event, "description": description}},
        )
        assert r.status_code == 200, r.text
        [mine] = [x for x in r.json()["data"]["routes"] if x["integration_id"] == hook]
        assert mine["matched"], mine
        return mine["preview"]

    heavy = preview("heavy")
    assert heavy["error"] == "template_limit", heavy
    assert "template limit" in heavy["detail"]
    # The same integration previews normally for an event within the limits.
    light = preview("light")
    assert light["a"] == "done 2.0.0" and isinstance(light["b"], str), light
    assert receiver.requests(f"/explain-heavy/{project}") == []


def test_a_heavy_render_does_not_stall_other_sends(own_stack: Stack, receiver: FakeServer):
    """Repro before the fix: the webhook provider rendered its template on the worker's one asyncio loop, so
    while this (allowed, with a raised step budget) template looped 6 x 10^6 times, no other delivery of the
    process moved: the fast one below was sent only after the heavy one. Now the render runs on a thread and
    the fast delivery completes while the heavy one is still rendering."""
    own_stack.env["HERALD_TEMPLATE_MAX_RENDER_STEPS"] = "50000000"
    own_stack.env["HERALD_SENDING_LEASE_S"] = "120"  # no beat runs here, but the heavy send is not lost
    own_stack.start_worker()
    heavy, fast = f"heavy-{uuid.uuid4().hex[:6]}", f"fast-{uuid.uuid4().hex[:6]}"
    heavy_path, fast_path = f"/offloop/{heavy}", f"/offloop/{fast}"
    with own_stack.client() as api:
        create_webhook(
            api,
            receiver.url(heavy_path),
            project=heavy,
            template=json.dumps({"a": HEAVY_LOOPS}),
            timeout_s=30,
        )
        create_webhook(api, receiver.url(fast_path), project=fast)
        heavy_event = post_release(api, heavy, description="heavy")
        wait_for_deliveries(api, heavy_event, states={"sending"}, timeout_s=30)  # claimed: rendering now
        fast_event = post_release(api, fast)
        [fast_delivery] = wait_for_deliveries(api, fast_event, timeout_s=60)
        assert fast_delivery["state"] == "delivered"
        assert len(receiver.requests(fast_path)) == 1
        # The heavy delivery has not reached its receiver yet: it was still rendering, off the loop.
        assert receiver.requests(heavy_path) == []
        [heavy_delivery] = wait_for_deliveries(api, heavy_event, timeout_s=120)
        assert heavy_delivery["state"] == "delivered", heavy_delivery
        wait_until(lambda: len(receiver.requests(heavy_path)) == 1, 10, "heavy body never arrived")
        assert json.loads(receiver.requests(heavy_path)[0].body) == {"a": "done 1.4.2"}
