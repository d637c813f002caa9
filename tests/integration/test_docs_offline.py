"""`/docs` and `/redoc` work offline: their pages reference only this API's own URLs, and those are served."""

from __future__ import annotations

import re

import pytest

from tests.integration.stack import Stack

pytestmark = pytest.mark.integration

_REFERENCE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|(?:url|openapi_url)\s*:\s*["']([^"']+)["']""")


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_a_cdn(own_stack: Stack, page):
    """Repro (issue 16): `/docs` loaded Swagger UI from cdn.jsdelivr.net and showed a blank page offline."""
    with own_stack.client() as client:
        r = client.get(page)
        assert r.status_code == 200 and "text/html" in r.headers["content-type"]
        refs = [a or b for a, b in _REFERENCE.findall(r.text)]
        assert any(ref.endswith(".js") for ref in refs), refs
        assert "http://" not in r.text and "https://" not in r.text, "an absolute URL: a CDN or a font host"
        for ref in refs:
            assert ref.startswith("/"), ref
            asset = client.get(ref)
            assert asset.status_code == 200, ref
            assert len(asset.content) > 100, ref  # the real bundle, not an empty placeholder


def test_the_schema_shows_each_providers_config(own_stack: Stack):
    """Repro (issue 16): the OpenAPI schema showed an integration's `config` as a free-form object, so `/docs`
    said nothing of any provider's fields."""
    from providers import registry

    with own_stack.client() as client:
        schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    for path, method in (("/v1/integrations", "post"), ("/v1/integrations/{integration_id}", "put")):
        body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
        assert body == {"$ref": "#/components/schemas/IntegrationInByProvider"}
    union = components["IntegrationInByProvider"]
    assert union["discriminator"]["propertyName"] == "provider"
    assert sorted(union["discriminator"]["mapping"]) == registry.names()
    assert len(union["oneOf"]) == len(registry.names())
    webhook = components["IntegrationIn_webhook"]
    assert webhook["properties"]["provider"]["const"] == "webhook"
    config = components[webhook["properties"]["config"]["$ref"].rsplit("/", 1)[1]]
    assert {"url", "headers", "signing_secret"} <= set(config["properties"])
    assert (
        "host"
        in components[components["IntegrationIn_smtp"]["properties"]["config"]["$ref"].rsplit("/", 1)[1]][
            "properties"
        ]
    )
