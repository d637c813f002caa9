"""Webhook payload templates: seed 003's samples work, values can never break the JSON, the sandbox holds."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from providers.render.template import (
    ALIASES,
    COMMON_VARIABLES,
    KIND_VARIABLES,
    PayloadTemplate,
    TemplateError,
    strip_trailing_commas,
    template_variables,
)
from providers.webhook import WebhookConfig
from tests.data import seed_003_payloads
from tests.golden.samples import SAMPLES

DOCS = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def seed_payloads() -> dict[str, str]:
    """The four sample payloads of seed 003 (Teams, Slack, Discord, RingCentral), verbatim (tests/data)."""
    payloads = seed_003_payloads()
    assert len(payloads) == 4
    return payloads


def test_seed_003_payloads_render_with_devtron_variables():
    message = SAMPLES["pipeline_failure"]
    for title, source in seed_payloads().items():
        template = PayloadTemplate(source)
        rendered = json.loads(template.render(template_variables(message)))
        flat = json.dumps(rendered)
        assert "checkout" in flat, title  # {{devtronAppName}}
        assert "pipeline.failure" in flat, title  # {{eventType}}
        assert "{{" not in flat, title
    ring = json.loads(
        PayloadTemplate(seed_payloads()["RingCentral Webhook Payload"]).render(template_variables(message))
    )
    texts = [
        item["text"]
        for col in ring["attachments"][0]["body"][1]["columns"]
        for item in col["items"]
        if "text" in item
    ]
    assert texts == [
        "Container Image Repo: registry.example/checkout \n Container Image Tag: 9f2c1e",
        "Triggered by: ana@example.com",
    ]


def test_seed_003_payloads_are_accepted_in_a_webhook_config():
    for source in seed_payloads().values():
        WebhookConfig.model_validate({"url": "https://hooks.example/x", "template": source})


HOSTILE = [
    'quote " and backslash \\ and newline \n and tab \t',
    '"}],"injected":{"x":"',
    "{{ 7 * 7 }} {% raw %}",
    "\u2028 line separator, \x00 nul, emoji 🚀, RTL \u202e",
    "</script><script>alert(1)</script>",
]


@pytest.mark.parametrize("value", HOSTILE)
def test_a_value_can_never_break_the_json(value: str):
    template = PayloadTemplate('{"text": "App {{ app }}!", "n": ["{{app}}", {"deep": "x{{ app }}y"}]}')
    message = replace(SAMPLES["pipeline_failure"], data={**SAMPLES["pipeline_failure"].data, "app": value})
    rendered = json.loads(template.render(template_variables(message)))
    assert rendered == {"text": f"App {value}!", "n": [value, {"deep": f"x{value}y"}]}


def test_values_print_in_json_spelling():
    template = PayloadTemplate(
        '{"m": "{{ mandatory }}", "none": "[{{ from_environment }}]", "pct": "{{ rollout_percent }}", '
        '"fields": "{{ fields }}", "loop": "{% for f in fields %}{{ f.name }}={{ f.value }};{% endfor %}"}'
    )
    message = SAMPLES["release_created"]
    variables = {**template_variables(message), "rollout_percent": 25.0}
    rendered = json.loads(template.render(variables))
    assert rendered["m"] == "true"
    assert rendered["none"] == "[]"
    assert rendered["pct"] == "25"
    assert json.loads(rendered["fields"])[0] == {"name": "Project", "value": "nitro-ios"}
    assert rendered["loop"].startswith("Project=nitro-ios;Environment=prod;")


def test_aliases_fall_back_in_order():
    release = template_variables(SAMPLES["release_created"])
    pipeline = template_variables(SAMPLES["pipeline_failure"])
    assert release["devtronAppName"] == "nitro-ios"  # no app on a release: the project
    assert pipeline["devtronAppName"] == "checkout"
    assert pipeline["devtronContainerImageTag"] == "9f2c1e"
    assert pipeline["eventType"] == "pipeline.failure"
    assert release["devtronContainerImageTag"] is None


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ('{"a": "{{ nope }}"}', "template_unknown_variable"),
        ('{"a": "{{ devtronAppname }}"}', "template_unknown_variable"),  # typo of an alias
        ('{"a": "{{ app "}', "template_syntax"),
        ('{"a": "{% for %}"}', "template_syntax"),
        ("{'a': 1}", "template_not_json"),
        ('"just a string"', "template_not_json"),
        ("{" + '"k": "v",' * 5000 + '"z": 1}', "template_too_large"),
    ],
)
def test_bad_templates_are_refused_with_a_code(source: str, code: str):
    with pytest.raises(TemplateError) as info:
        PayloadTemplate(source)
    assert info.value.code == code
    with pytest.raises(ValueError, match=code):
        WebhookConfig.model_validate({"url": "https://hooks.example/x", "template": source})


@pytest.mark.parametrize(
    "expression",
    [
        "{{ title.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ data.__init__.__globals__ }}",
        "{{ 'x' * 100000 }}",
        "{{ fields * 100000 }}",
        "{{ 10 ** 100000 }}",
        "{% for i in range(100000) %}x{% endfor %}",
    ],
)
def test_the_sandbox_refuses_escapes_and_blowups(expression: str):
    template = PayloadTemplate('{"a": "' + expression.replace('"', '\\"') + '"}')
    with pytest.raises(TemplateError) as info:
        template.render(template_variables(SAMPLES["pipeline_failure"]))
    assert info.value.code == "template_render"


def test_unsafe_filters_are_not_available():
    with pytest.raises(TemplateError):
        PayloadTemplate('{"a": "{{ title|center(1000000000) }}"}').render(
            template_variables(SAMPLES["pipeline_failure"])
        )


def test_trailing_commas_outside_strings_only():
    assert strip_trailing_commas('{"a": [1, 2, ], "b": "x, ]", }') == '{"a": [1, 2 ], "b": "x, ]" }'
    assert strip_trailing_commas('{"a": "\\", }"}') == '{"a": "\\", }"}'


def test_every_variable_and_alias_is_documented():
    docs = DOCS.read_text(encoding="utf-8")
    names = [*COMMON_VARIABLES, *ALIASES, *(n for kind in KIND_VARIABLES.values() for n in kind)]
    missing = [n for n in names if f"`{n}`" not in docs]
    assert not missing, f"document these in docs/providers.md: {missing}"
