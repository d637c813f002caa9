"""The console's config forms, generated from each provider's config model, and the way back to the API's
config dict; the sign-in redirect target and the API-422-to-field mapping."""

from __future__ import annotations

import pytest
from starlette.datastructures import FormData

from api.console.config_form import config_from_form, fields_of
from api.console.pages import field_errors
from api.console.session import _safe_next
from api.errors import ApiError
from providers import registry


@pytest.mark.parametrize("provider", registry.names())
def test_every_provider_gets_a_form_whose_required_fields_come_first(provider):
    fields = fields_of(provider)
    assert fields, provider
    required = [f.required for f in fields]
    assert required == sorted(required, reverse=True)
    model = registry.config_model(provider)
    # every required field of the model is on the form (a form that cannot be filled in is useless)
    on_form = {f.name for f in fields}
    assert {n for n, info in model.model_fields.items() if info.is_required()} <= on_form


def test_secrets_are_password_fields_and_never_echoed_back():
    kinds = {f.name: f.kind for f in fields_of("webhook")}
    assert kinds["url"] == "secret" and kinds["signing_secret"] == "secret"
    assert kinds["headers"] == "secret_json"  # a dict of secret values
    assert "signing_secret_rotated_at" not in kinds  # set by Herald, never typed
    assert {f.name: f.kind for f in fields_of("fcm")}["service_account"] == "secret_json"
    form = FormData(
        [("cfg.url", "https://example.com/h/s3cret"), ("cfg.timeout_s", "7"), ("cfg.template", "")]
    )
    config, typed = config_from_form("webhook", form, editing=False)
    assert config == {"url": "https://example.com/h/s3cret", "timeout_s": 7}
    assert "url" not in typed and typed["timeout_s"] == "7"


def test_editing_keeps_an_empty_secret_and_clears_an_emptied_field():
    form = FormData([("cfg.webhook_url", ""), ("cfg.channel", ""), ("cfg.timeout_s", "10")])
    config, _ = config_from_form("slack", form, editing=True)
    assert "webhook_url" not in config  # the API keeps the stored secret
    assert config["channel"] is None


def test_choices_lists_booleans_and_numbers_are_typed_as_the_model_takes_them():
    form = FormData(
        [
            ("cfg.priority", "10"),
            ("cfg.device_tokens", "aaa\n\n bbb \n"),
            ("cfg.expiration_s", "3600"),
            ("cfg.timeout_s", "2.5"),
        ]
    )
    config, _ = config_from_form("apns", form, editing=False)
    assert config["priority"] == 10 and config["device_tokens"] == ["aaa", "bbb"]
    assert config["expiration_s"] == 3600 and config["timeout_s"] == 2.5
    # an unchecked checkbox is false
    assert config_from_form("discord", FormData([]), editing=False)[0]["edit_in_place"] is False


def test_the_apis_422_lands_under_its_field():
    assert field_errors(ApiError(422, "invalid_config", "config.webhook_url: Field required"))[
        "webhook_url"
    ] == ("Field required")
    assert field_errors(ApiError(422, "invalid_field", "name: String should have at least 1 character"))[
        "name"
    ].startswith("String should")
    assert field_errors(ApiError(422, "x", "no field named here")) == {"_form": "no field named here"}


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/console/notifications?project=a", "/console/notifications?project=a"),
        ("//evil.example/console/", "/console/integrations"),
        ("https://evil.example/console/", "/console/integrations"),
        ("/console/\\evil", "/console/integrations"),
        ("/v1/integrations", "/console/integrations"),
        (None, "/console/integrations"),
    ],
)
def test_sign_in_returns_only_to_a_console_page(target, expected):
    assert _safe_next(target) == expected
