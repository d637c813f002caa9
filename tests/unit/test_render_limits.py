"""Vendor limits are met by truncating with a marker, for messages far over every limit.

The checks are the fakes' own validators (tests/fakes/*), written from reference/provider-protocols.md, plus the
limits spelled out here, so a renderer cannot pass by agreeing with itself.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from providers.render import discord, pagerduty, slack, teams
from providers.render.common import TRUNCATION_MARKER, truncate
from shared.rendering import RenderedMessage
from tests.fakes.discord import embed_problems
from tests.fakes.pagerduty import problems as pagerduty_problems
from tests.fakes.slack import block_problems
from tests.fakes.teams import CONNECTOR_MAX_BYTES, card_of
from tests.golden.samples import SAMPLES, oversized

BIG = {
    "oversized": oversized(),
    "oversized_x5": oversized(scale=5),
    "many_short_fields": replace(SAMPLES["pipeline_failure"], fields=[(f"f{i}", "x") for i in range(600)]),
    "huge_text_only": replace(SAMPLES["incident_triggered"], text="<&>" * 50_000),
    "empty_values": replace(SAMPLES["pipeline_failure"], fields=[("", ""), ("Name", "")], text=""),
}


def test_truncate_keeps_short_text_and_marks_cut_text():
    assert truncate("short", 10) == "short"
    cut = truncate("x" * 100, 50)
    assert len(cut) == 50 and cut.endswith(TRUNCATION_MARKER)


@pytest.mark.parametrize("name", sorted(BIG))
def test_slack_blocks_within_limits(name: str):
    message = BIG[name]
    body = slack.render(message)
    assert block_problems(body) is None
    blocks = body["blocks"]
    assert len(blocks) <= 50
    assert len(body["text"]) <= 4000
    # Slack answers msg_blocks_too_long somewhere around 13.2k characters of block text
    text_chars = sum(
        len((b.get("text") or {}).get("text", ""))
        + sum(len(f["text"]) for f in b.get("fields", []))
        + sum(len(e["text"]) for e in b.get("elements", []))
        for b in blocks
    )
    assert text_chars < 13_000
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    assert blocks[-1]["type"] == "context"  # the footer always survives
    shown = sum(len(b.get("fields", [])) for b in blocks)
    if shown < len(message.fields):
        notes = [e["text"] for b in blocks if b["type"] == "context" for e in b["elements"]]
        assert any(f"{len(message.fields) - shown} more field(s)" in n for n in notes)


def test_slack_escapes_markup_and_never_splits_an_entity():
    message = replace(SAMPLES["release_created"], text="a<b>&c " * 1000)
    section = slack.render(message)["blocks"][1]["text"]["text"]
    assert "<" not in section and ">" not in section
    assert section.endswith(TRUNCATION_MARKER)
    body = section.removesuffix(TRUNCATION_MARKER)
    assert not any(body.endswith(p) for p in ("&", "&a", "&am", "&amp", "&l", "&lt", "&g", "&gt"))


def test_slack_link_cannot_break_out_of_its_markup():
    message = replace(SAMPLES["release_created"], link="https://x.example/a|<!channel>")
    link_block = slack.render(message)["blocks"][-2]["text"]["text"]
    assert link_block == "<https://x.example/a%7C&lt;!channel&gt;|View details>"


@pytest.mark.parametrize("name", sorted(BIG))
def test_discord_embed_within_limits(name: str):
    message = BIG[name]
    body = discord.render(message, content="c" * 5000)
    assert embed_problems(body) is None
    embed = body["embeds"][0]
    assert len(embed.get("fields", [])) <= 25
    assert body["allowed_mentions"] == {"parse": []}
    if message.text:
        assert embed["description"], "the description is shortened, never dropped"


@pytest.mark.parametrize("name", sorted(BIG))
def test_teams_card_within_budget(name: str):
    body = teams.render(BIG[name])
    assert len(json.dumps(body).encode()) < CONNECTOR_MAX_BYTES
    card = card_of(body)
    assert card is not None and card["version"] == "1.4"


@pytest.mark.parametrize("name", sorted(BIG))
def test_pagerduty_summary_and_key_within_limits(name: str):
    message = replace(BIG[name], lifecycle_key="k" * 400)
    body = pagerduty.render(message, routing_key="0" * 32, action="trigger")
    assert pagerduty_problems(body) == []
    assert len(body["payload"]["summary"]) <= 1024
    assert len(body["dedup_key"]) <= 255
    assert len(json.dumps(body).encode()) < 512 * 1024


def test_pagerduty_dedup_key_is_stable_and_per_lifecycle():
    a = pagerduty.dedup_key(SAMPLES["pipeline_failure"])
    assert (
        a == pagerduty.dedup_key(SAMPLES["pipeline_success"]) == "pipeline:shop:checkout:deploy-prod:9f2c1e"
    )
    long_key = replace(SAMPLES["incident_triggered"], lifecycle_key="k" * 400)
    assert pagerduty.dedup_key(long_key) == pagerduty.dedup_key(long_key)
    no_key: RenderedMessage = replace(SAMPLES["incident_triggered"], lifecycle_key=None)
    assert pagerduty.dedup_key(no_key) == "herald:00000000-0000-0000-0000-000000000005"
