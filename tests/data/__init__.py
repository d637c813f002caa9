"""Test data kept in the repository, so that every clone runs every test (nothing skips for a missing file).

`seed_003/` holds the four sample webhook payload templates of product seed 003 (Teams, Slack, Discord,
RingCentral), copied verbatim from its ```json blocks: they are Jinja-style templates, not JSON, hence `.tmpl`.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent

# The seed's code-block titles, which the tests use as names, and the file each is stored in.
SEED_003_FILES = {
    "Teams Webhook Payload": "teams.tmpl",
    "Slack Webhook Payload": "slack.tmpl",
    "Discord Webhook Payload": "discord.tmpl",
    "RingCentral Webhook Payload": "ringcentral.tmpl",
}


def seed_003_payloads() -> dict[str, str]:
    """The four sample payloads of seed 003 by their title, verbatim."""
    return {
        title: (DATA / "seed_003" / name).read_text(encoding="utf-8")
        for title, name in SEED_003_FILES.items()
    }
