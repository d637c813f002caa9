"""Webhook payload templates: seed 003's samples work, values can never break the JSON, the sandbox holds."""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest

from providers.render.template import (
    ALIASES,
    COMMON_VARIABLES,
    KIND_VARIABLES,
    PayloadTemplate,
    RenderLimits,
    TemplateError,
    check_template,
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
    ("expression", "code"),
    [
        ("{{ title.__class__.__mro__ }}", "template_render"),
        ("{{ ''.__class__.__subclasses__() }}", "template_render"),
        ("{{ data.__init__.__globals__ }}", "template_render"),
        ("{{ fields.append(1) }}", "template_render"),  # the immutable sandbox: no state carried across loops
        ("{{ 'x' * 1000000 }}", "template_limit"),
        ("{{ fields * 100000 }}", "template_limit"),
        ("{{ 10 ** 100000 }}", "template_limit"),
        ("{% for i in range(100000) %}x{% endfor %}", "template_limit"),
    ],
)
def test_the_sandbox_refuses_escapes_and_blowups(expression: str, code: str):
    template = PayloadTemplate('{"a": "' + expression.replace('"', '\\"') + '"}')
    with pytest.raises(TemplateError) as info:
        template.render(template_variables(SAMPLES["pipeline_failure"]))
    assert info.value.code == code


@pytest.mark.parametrize(
    "name", ["center", "format", "indent", "wordwrap", "batch", "slice", "filesizeformat"]
)
def test_growing_filters_outside_the_allow_list_are_refused_when_saved(name: str):
    with pytest.raises(TemplateError) as info:
        _one("{{ title|" + name + "(10) }}")
    assert info.value.code == "template_syntax"


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


# --- Limits during rendering (issue 10, "Templates (security)") -------------------------------------------------
# Repro before the fix: `PayloadTemplate('{"a": "{{ \'%50000000s\' % 1 }}"}').render(...)` built a 50 MB string
# (the size was checked only after rendering), `replace`/`center`/`format`/`join` amplified without bound, and
# `{% for %}` nests of `range(1000)` looped for hours: every check came after the work, or never.


def _one(expression: str) -> PayloadTemplate:
    """A template whose only string is `expression` (JSON-quoted, so any Jinja text fits)."""
    return PayloadTemplate(json.dumps({"a": expression}))


AMPLIFICATIONS = {
    "printf width": "{{ '%50000000s' % 1 }}",
    "printf precision": "{{ '%.50000000f' % 1.5 }}",
    "printf of an aliased list": "{{ '%s' % ([title * 100] * 5000,) }}",
    "repeat": "{{ 'x' * 10**8 }}",
    "repeat of a variable": "{{ title * 10**7 }}",
    "replace filter chained": "{{ ('a' * 1000)|replace('a', 'a' * 1000)|replace('a', 'a' * 1000) }}",
    "str.replace chained": "{{ ('a' * 1000).replace('a', 'a' * 1000).replace('a', 'a' * 1000) }}",
    "str.format width": "{{ '{:>100000000}'.format(1) }}",
    "str.format precision": "{{ '{:.100000000f}'.format(1.5) }}",
    "str.format nested width": "{{ '{:>{w}}'.format(1, w=10**8) }}",
    "str.format_map": "{{ '{a:^99999999}'.format_map({'a': 1}) }}",
    "center": "{{ title.center(10**8) }}",
    "ljust": "{{ title.ljust(10**8) }}",
    "rjust": "{{ title.rjust(10**8) }}",
    "zfill": "{{ '1'.zfill(10**8) }}",
    "expandtabs": "{{ ('\\t' * 1000).expandtabs(10**6) }}",
    "join filter of a big range": "{{ range(1000)|join('x' * 5000) }}",
    "str.join of a big range": "{{ ('x' * 5000).join(range(1000)|map('string')) }}",
    "join of an aliased list": "{{ ([title * 100] * 5000)|join }}",
    "list printed as JSON": "{{ [title * 100] * 5000 }}",
    "concat doubling": "{% set a = 'x' * 9000 %}{{ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a"
    " ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a ~ a }}",
    "plus doubling": "{% set a = 'x' * 9000 %}{% set a = a + a %}{% set a = a + a %}{% set a = a + a %}"
    "{% set a = a + a %}{% set a = a + a %}{{ a }}",
    "string of an aliased list": "{{ ([title * 100] * 5000)|string }}",
    "tojson of an aliased list": "{{ ([title * 100] * 5000)|tojson }}",
    "power": "{{ 7 ** 99999 }}",
    "power of a power": "{{ (2 ** 64) ** 64 }}",
    "big int product": "{% set n = 2 ** 3000 %}{{ n * n }}",
    "output of a loop": "{% for i in range(1000) %}{{ 'x' * 9000 }}{% endfor %}",
    "constant output of nested loops": "{% for i in range(1000) %}{% for j in range(1000) %}"
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx{% endfor %}{% endfor %}",
    "upper of a loop of big strings": "{% for i in range(1000) %}{% if (text ~ 'x' * 9000)|upper %}{% endif %}{% endfor %}",
    "compare big lists in a loop": "{% set l = [1] * 10000 %}{% for i in range(1000) %}{% if l == l %}{% endif %}"
    "{% endfor %}",
}


@pytest.mark.parametrize("expression", AMPLIFICATIONS.values(), ids=AMPLIFICATIONS.keys())
def test_amplification_stops_with_the_limit_error_in_bounded_memory(expression: str):
    """Each of these used to allocate 10^7-10^8 characters (or compute for minutes) before any check."""
    template = _one(expression)
    variables = template_variables(SAMPLES["pipeline_failure"])
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError) as info:
            template.render(variables)
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.value.code == "template_limit", str(info.value)
    assert peak_bytes < 24 * 1024 * 1024, f"peak {peak_bytes} bytes while rendering"


LOOP_10_10 = (
    "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}{% for d in range(10) %}"
    "{{ d }}{% endfor %}{% endfor %}{% endfor %}{% endfor %}"
)


def test_a_loop_of_ten_billion_steps_is_stopped_by_the_step_budget():
    """Repro: this template (1000 x 1000 x 1000 x 10 iterations) rendered for hours, each range being allowed."""
    with pytest.raises(TemplateError) as info:
        _one(LOOP_10_10).render(template_variables(SAMPLES["pipeline_failure"]))
    assert info.value.code == "template_limit"
    assert "steps" in str(info.value)


def test_a_loop_without_output_is_stopped_too():
    with pytest.raises(TemplateError) as info:
        _one(LOOP_10_10.replace("{{ d }}", "")).render(template_variables(SAMPLES["pipeline_failure"]))
    assert info.value.code == "template_limit"


def test_limits_are_per_render_and_configurable():
    template = _one("{% for i in range(1000) %}{% for j in range(100) %}.{% endfor %}{% endfor %}")
    variables = template_variables(SAMPLES["pipeline_failure"])
    with pytest.raises(TemplateError):
        template.render(variables, limits=RenderLimits(max_render_steps=50_000))
    body = template.render(variables, limits=RenderLimits(max_render_steps=500_000))
    assert json.loads(body) == {"a": "." * 100_000}
    # The budget is not carried over from one render to the next.
    template.render(variables, limits=RenderLimits(max_render_steps=500_000))
    with pytest.raises(TemplateError) as info:
        template.render(variables, limits=RenderLimits(max_output_bytes=50_000))
    assert info.value.code == "template_limit"


@pytest.mark.parametrize(
    "expression",
    [
        "{% macro m() %}x{% endmacro %}{{ m() }}",
        "{% set x %}{{ title }}{% endset %}{{ x }}",
        "{% filter upper %}{{ title }}{% endfilter %}",
        "{% for f in fields recursive %}{{ f.name }}{% endfor %}",
        "{{ title.translate({97: 'b' * 1000}) }}",
    ],
)
def test_constructs_that_buffer_output_out_of_sight_are_refused(expression: str):
    """Macros, block `set`, `filter` blocks and recursive loops build their output in buffers the streaming
    render does not see, so they are not part of the template language (translate maps a char to any string)."""
    with pytest.raises(TemplateError) as info:
        _one(expression).render(template_variables(SAMPLES["pipeline_failure"]))
    assert info.value.code in {"template_syntax", "template_render"}


def test_a_template_that_breaks_a_limit_on_the_sample_is_refused_when_saved():
    source = json.dumps({"a": "{{ '%50000000s' % 1 }}"})
    with pytest.raises(TemplateError) as info:
        check_template(source)
    assert info.value.code == "template_limit"
    with pytest.raises(ValueError, match="template_limit"):
        WebhookConfig.model_validate({"url": "https://hooks.example/x", "template": source})


# sha256 prefixes of the bodies rendered by the implementation before the limits (commit 9b3777c): the limits
# change nothing for a template that stays within them.
SEED_GOLDEN = {
    ("incident_triggered", "Discord Webhook Payload"): "2a723efbcbc8fe31",
    ("incident_triggered", "RingCentral Webhook Payload"): "6f6df00fa3192464",
    ("incident_triggered", "Slack Webhook Payload"): "ef291f80ad6fcec9",
    ("incident_triggered", "Teams Webhook Payload"): "fe8a5a4f416cd5a3",
    ("pipeline_failure", "Discord Webhook Payload"): "d5855a017f797fa1",
    ("pipeline_failure", "RingCentral Webhook Payload"): "5fc4a8389aaa2d85",
    ("pipeline_failure", "Slack Webhook Payload"): "9b95fb6b0498ed8a",
    ("pipeline_failure", "Teams Webhook Payload"): "0c43d5187c8fef81",
    ("pipeline_success", "Discord Webhook Payload"): "a1ff4090115d10c3",
    ("pipeline_success", "RingCentral Webhook Payload"): "a98458bcd32c7fc6",
    ("pipeline_success", "Slack Webhook Payload"): "4a979888ed8888a9",
    ("pipeline_success", "Teams Webhook Payload"): "ad643204dfe655c1",
    ("release_created", "Discord Webhook Payload"): "d9b100c0796a0189",
    ("release_created", "RingCentral Webhook Payload"): "be9df872b421e50e",
    ("release_created", "Slack Webhook Payload"): "2eb3721e35730da0",
    ("release_created", "Teams Webhook Payload"): "9e83902d0e2be8df",
    ("release_promoted", "Discord Webhook Payload"): "9abaf61782eee8d5",
    ("release_promoted", "RingCentral Webhook Payload"): "1c4b1b812a259592",
    ("release_promoted", "Slack Webhook Payload"): "110d0b2789f0d85a",
    ("release_promoted", "Teams Webhook Payload"): "a9a312f3031bf73f",
}
RICH = json.dumps(
    {
        "t": "{{ title|upper }} / {{ project|replace('-', '_') }} {{ 'v%s' % version if version else '' }}",
        "f": "{% for f in fields %}{{ loop.index }}. {{ f.name|lower }}={{ f.value|truncate(20) }}"
        "{% if not loop.last %}, {% endif %}{% endfor %}",
        "names": "{{ fields|map(attribute='name')|join(', ') }}",
        "n": "{{ fields|length * 2 }}",
        "d": "{{ data }}",
        "x": "{{ (text or 'none')[:40] ~ '|' ~ severity|capitalize }}",
        "fmt": "{{ '{:>8}|{}'.format(severity, kind) }}",
        "lst": [
            "{{ fields|selectattr('name', 'equalto', 'App')|map(attribute='value')|first|default('-') }}",
            3,
            True,
            None,
        ],
        "r": "{% for i in range(3) %}{{ i ** 2 }}{% endfor %}",
        "j": "{{ fields|tojson }}",
        "u": "{{ link|urlencode }}",
    }
)
RICH_GOLDEN = {
    "incident_triggered": "583d7196df842e95",
    "pipeline_failure": "2208df7b6a985da2",
    "pipeline_success": "0dc6bf795404616f",
    "release_created": "5dd0c5476c14e433",
    "release_promoted": "deb9f06e2b58ee5f",
}


def test_valid_templates_render_byte_identically_within_the_limits():
    for (sample, title), digest in SEED_GOLDEN.items():
        body = PayloadTemplate(seed_payloads()[title]).render(template_variables(SAMPLES[sample]))
        assert hashlib.sha256(body).hexdigest()[:16] == digest, (sample, title, body)
    for sample, digest in RICH_GOLDEN.items():
        body = PayloadTemplate(RICH).render(template_variables(SAMPLES[sample]))
        assert hashlib.sha256(body).hexdigest()[:16] == digest, (sample, body)


def test_long_values_within_the_limits_are_not_refused():
    """Sizes are predicted close to what is built: a 100 KB multi-line release note prints whole as JSON, as a
    `%s` argument, uppercased, joined, replaced, formatted."""
    notes = ('Fixes the login crash\n\tand "quotes" \\ too. ' * 2500)[:100_000]
    message = replace(
        SAMPLES["release_created"], data={**SAMPLES["release_created"].data, "description": notes}
    )
    variables = template_variables(message)
    for expression, expected in [
        ("{{ data }}", None),
        ("{{ '%s!' % description }}", notes + "!"),
        ("{{ description|upper }}", notes.upper()),
        ("{{ [description]|join(', ') }}", notes),
        ("{{ description|replace('crash', 'bug') }}", notes.replace("crash", "bug")),
        ("{{ '{}|{:>5}'.format(description, 1) }}", notes + "|    1"),
        ("{{ description ~ '.' }}", notes + "."),
        ("{% for line in description.splitlines()[:3] %}{{ line|trim }};{% endfor %}", None),
    ]:
        rendered = json.loads(_one(expression).render(variables))["a"]
        assert expected is None or rendered == expected, expression
    assert json.loads(json.loads(_one("{{ data }}").render(variables))["a"])["description"] == notes


def test_a_deeply_nested_expression_is_a_syntax_error():
    with pytest.raises(TemplateError) as info:
        _one("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}")
    assert info.value.code == "template_syntax"


def test_methods_and_filters_work_inside_loops():
    """Jinja passes a loop's variables to calls made in its body: str methods called there must still work."""
    template = _one(
        "{% for f in fields %}{{ f.name.lower().replace(' ', '_') }}={{ f.value.split('/')|last }}"
        "{{ '{}'.format(loop.index) }};{% endfor %}"
    )
    rendered = json.loads(template.render(template_variables(SAMPLES["pipeline_failure"])))["a"]
    assert rendered.startswith("app=checkout1;project=shop2;")
