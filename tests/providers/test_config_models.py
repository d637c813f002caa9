"""Provider config models: unknown keys refused on input but tolerated in storage, masking keeps host and port."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from providers import registry
from providers.base import mask_config


@pytest.mark.parametrize("provider", registry.names())
def test_every_config_model_forbids_unknown_keys(provider: str):
    assert registry.config_model(provider).model_config.get("extra") == "forbid"


def test_a_typo_is_named_as_an_unknown_key():
    """Issue 16: `{"url": ...}` for Slack must name `url` as unknown (not only say webhook_url is missing)."""
    with pytest.raises(ValidationError) as caught:
        registry.validate_input_config("slack", {"url": "https://hooks.slack.com/x"}, egress_allow_cidrs=[])
    unknown = [e for e in caught.value.errors() if e["type"] == "extra_forbidden"]
    assert [e["loc"] for e in unknown] == [("url",)]


def test_a_stored_config_with_a_key_no_longer_known_still_loads():
    """Strict on input, lenient on what is already stored: a config saved before a key was dropped must not
    turn every delivery of its integration into "config unreadable".

    Repro before the fix: there was no lenient loader; `model_validate` of the stored dict raised
    extra_forbidden."""
    stored = {"url": "https://example.com/hook", "retired_option": True}
    with pytest.raises(ValidationError):
        registry.config_model("webhook").model_validate(stored)
    config = registry.load_stored_config("webhook", stored)
    assert config.model_dump()["url"].get_secret_value() == "https://example.com/hook"


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("http://127.0.0.1:9000/hook", "http://127.0.0.1:9000/********"),
        ("https://hooks.example.com/services/T/B/secret", "https://hooks.example.com/********"),
        ("https://user:pw@example.com:8443/x?token=1", "https://example.com:8443/********"),
        ("http://[2001:db8::1]:8080/x", "http://[2001:db8::1]:8080/********"),
    ],
)
def test_mask_keeps_scheme_host_and_port(url: str, masked: str):
    """Issue 16: the masked config dropped the port (`http://127.0.0.1/********` for `:9000/hook`)."""
    config = registry.load_stored_config("webhook", {"url": url})
    assert mask_config(config)["url"] == masked
