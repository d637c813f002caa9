"""Console pages and their JSON list endpoints against a console-sized database (issue 14).

`python -m bench.console`: a fresh database (its own name) filled in seconds by bench/console_data.py with 100k
deliveries (+ their attempts), 10k dead letters, 50k events, 5k incidents and 1k things; the real API under
uvicorn (a subprocess; no worker: pages only read); a console session signed in with the admin key. Then, for
each page and its JSON endpoint, the first page, a filtered page and a deep page (a cursor 80 % of the way in),
`--requests` sequential GETs each: p50/p99 in ms, printed as a table beside two baselines (`/readyz`, which
reads nothing, and the login page, which renders a template and reads nothing). Last, EXPLAIN of every list
query (the statements the query layer really sends, recorded while it runs in this process): the plan's scan
nodes, each with its index, and any Seq Scan on a big table flagged.
Figures are noisy on a shared 2-core machine (+-30 %): compare within one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from api.deps import Principal
from api.queries.dead_letters import dead_letter_filter, dead_letter_page
from api.queries.deliveries import DeliveryQuery, delivery_page
from api.queries.events import EventQuery, event_page
from api.routes._common import encode_cursor
from api.routes.events import event_detail
from api.routes.incidents import lifecycle_detail, lifecycle_page
from bench.console_data import Shape, fill, recorded
from bench.system import free_port, pct, wait_http
from shared.crypto import generate_key_spec
from shared.migrate import upgrade

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Redis db 14 is the benchmarks' (tests/integration/conftest.py); the pages only read queue lengths from it.
BENCH_REDIS_DB = 14
ADMIN = Principal("bench", "bench", frozenset({"admin"}), None)
BIG_TABLES = {"event", "delivery", "attempt", "gateway_lifecycle"}


@contextmanager
def database() -> Iterator[str]:
    name = f"herald_bench_console_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def api_server(database_url: str, admin_key: str, workdir: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env.update(
        HERALD_DATABASE_URL=database_url,
        HERALD_REDIS_URL=f"redis://127.0.0.1:6379/{BENCH_REDIS_DB}",
        HERALD_ENCRYPTION_KEYS=generate_key_spec("bench"),
        HERALD_BOOTSTRAP_ADMIN_KEY=admin_key,
        HERALD_PUBLIC_BASE_URL=f"http://127.0.0.1:{port}",
    )
    log = (workdir / "api.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "api.app:app", "--port", str(port), "--log-level", "warning",
         "--no-access-log"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/readyz", timeout_s=120)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def deep_cursor(engine: Engine, sql: str) -> str:
    with engine.connect() as conn:
        ts, row_id = conn.execute(text(sql)).one()
    return encode_cursor(ts, row_id)


def timed(client: httpx.Client, path: str, requests: int) -> tuple[float, float, int]:
    for _ in range(2):  # warm: connection, template compile, plan cache
        r = client.get(path)
    if r.status_code != 200:
        raise RuntimeError(f"GET {path}: {r.status_code} {r.text[:300]}")
    samples = []
    for _ in range(requests):
        start = time.perf_counter()
        r = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        assert r.status_code == 200, (path, r.status_code)
    return pct(samples, 50), pct(samples, 99), len(r.content)


def scans(plan: dict[str, Any]) -> list[str]:
    out = []
    node = plan.get("Node Type", "")
    if "Scan" in node and plan.get("Relation Name") in BIG_TABLES | {"integration"} | {None}:
        where = plan.get("Index Name") or plan.get("Relation Name") or ""
        flag = "  <-- SEQ SCAN" if node == "Seq Scan" and plan.get("Relation Name") in BIG_TABLES else ""
        out.append(f"{node} {where}{flag}")
    for child in plan.get("Plans", []):
        out.extend(scans(child))
    return out


def explain(engine: Engine, name: str, run: Callable[[Session], Any]) -> list[str]:
    lines = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for i, (statement, parameters) in enumerate(recorded(engine, run)):
            cur.execute("EXPLAIN (FORMAT JSON) " + statement, parameters)
            [[doc]] = cur.fetchall()
            found = [s for s in scans(doc[0]["Plan"]) if "integration" not in s or "Seq" not in s]
            lines.append(f"  {name} [{i + 1}]: " + "; ".join(found or ["(no table scan)"]))
    finally:
        raw.close()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=50_000, help="events (x2 deliveries each)")
    parser.add_argument("--requests", type=int, default=30, help="timed GETs per row")
    parser.add_argument("--integrations", type=int, default=20)
    args = parser.parse_args(argv)
    if args.integrations < 3:
        parser.error("--integrations must be at least 3 (the integration pages are timed on the third)")
    shape = Shape(events=args.events)
    admin_key = "hk_bench_" + uuid.uuid4().hex
    with database() as database_url, tempfile.TemporaryDirectory() as tmp:
        upgrade(database_url)
        with api_server(database_url, admin_key, Path(tmp)) as url:
            client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=60)
            ids = []
            for i in range(args.integrations):
                r = client.post(
                    "/v1/integrations",
                    json={
                        "name": f"hook-{i}",
                        "provider": "webhook",
                        "config": {"url": f"https://example.com/{i}"},
                    },
                )
                r.raise_for_status()
                ids.append(uuid.UUID(r.json()["data"]["id"]))
            started = time.perf_counter()
            with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
                fill(conn, ids, shape)
                counts = {
                    t: conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0]  # type: ignore[index]
                    for t in ("event", "delivery", "attempt", "gateway_lifecycle")
                }
                dead = conn.execute("SELECT count(*) FROM delivery WHERE state = 'dead'").fetchone()[0]  # type: ignore[index]
            fill_s = time.perf_counter() - started
            print(
                f"filled in {fill_s:.1f} s: {counts['event']} events, {counts['delivery']} deliveries "
                f"({dead} dead), {counts['attempt']} attempts, {counts['gateway_lifecycle']} incidents+things"
            )
            engine = create_engine(database_url)
            deep = {
                "event": deep_cursor(
                    engine, "SELECT created_at, id FROM event ORDER BY created_at DESC, id DESC "
                    f"OFFSET {int(counts['event'] * 0.8)} LIMIT 1"
                ),
                "delivery": deep_cursor(
                    engine, "SELECT created_at, id FROM delivery ORDER BY created_at DESC, id DESC "
                    f"OFFSET {int(counts['delivery'] * 0.8)} LIMIT 1"
                ),
                "dead": deep_cursor(
                    engine, "SELECT updated_at, id FROM delivery WHERE state = 'dead' "
                    f"ORDER BY updated_at DESC, id DESC OFFSET {int(dead * 0.8)} LIMIT 1"
                ),
                "incident": deep_cursor(
                    engine, "SELECT created_at, id FROM gateway_lifecycle WHERE kind = 'incident' "
                    f"ORDER BY created_at DESC, id DESC OFFSET {int(shape.incidents * 0.8)} LIMIT 1"
                ),
            }  # fmt: skip
            per_integration = counts["delivery"] // args.integrations
            deep["integration"] = deep_cursor(
                engine,
                f"SELECT created_at, id FROM delivery WHERE integration_id = '{ids[2]}' "
                f"ORDER BY created_at DESC, id DESC OFFSET {int(per_integration * 0.8)} LIMIT 1",
            )
            with engine.connect() as conn:
                event_id = conn.execute(
                    text("SELECT event_id FROM delivery WHERE state = 'dead' ORDER BY created_at LIMIT 1")
                ).scalar_one()
                incident_id = conn.execute(
                    text("SELECT object_id FROM gateway_lifecycle WHERE kind = 'incident' LIMIT 1")
                ).scalar_one()

            browser = httpx.Client(base_url=url, timeout=60)
            r = browser.post("/console/login", data={"api_key": admin_key, "next": "/console/events"})
            assert r.status_code == 303 and "herald_console" in browser.cookies, r.text[:300]
            i2 = ids[2]
            rows: list[tuple[str, str, str, httpx.Client]] = [
                ("baseline", "readyz (no query)", "/readyz", client),
                ("baseline", "login page (template only)", "/console/login", httpx.Client(base_url=url)),
            ]
            for label, page, api, cursor in (
                ("dead letters", "/console/dead-letters", "/v1/dead-letters", deep["dead"]),
                ("events", "/console/events", "/v1/events", deep["event"]),
                ("incidents", "/console/incidents", "/v1/incidents", deep["incident"]),
            ):
                filtered = {
                    "dead letters": ("?reason=auth_failed", "?reason=auth_failed"),
                    "events": ("?project=proj-3", "?project=proj-3"),
                    "incidents": ("?severity=critical", "?severity=critical"),
                }[label]
                for what, suffix_page, suffix_api in (
                    ("first", "", ""),
                    ("filtered", filtered[0], filtered[1]),
                    ("deep", f"?cursor={cursor}", f"?cursor={cursor}"),
                ):
                    rows.append((label, f"page, {what}", page + suffix_page, browser))
                    rows.append((label, f"JSON, {what}", api + suffix_api, client))
            rows += [
                ("deliveries", "JSON, first", "/v1/deliveries", client),
                ("deliveries", "JSON, filtered (dead)", "/v1/deliveries?state=dead", client),
                ("deliveries", "JSON, deep", f"/v1/deliveries?cursor={deep['delivery']}", client),
                ("deliveries", "page, one integration", f"/console/integrations/{i2}", browser),
                ("deliveries", "JSON, one integration", f"/v1/integrations/{i2}/deliveries", client),
                ("deliveries", "page, integration, dead", f"/console/integrations/{i2}?state=dead", browser),
                (
                    "deliveries",
                    "JSON, integration, dead",
                    f"/v1/integrations/{i2}/deliveries?state=dead",
                    client,
                ),
                (
                    "deliveries",
                    "page, integration, deep",
                    f"/console/integrations/{i2}?cursor={deep['integration']}",
                    browser,
                ),
                (
                    "deliveries",
                    "JSON, integration, deep",
                    f"/v1/integrations/{i2}/deliveries?cursor={deep['integration']}",
                    client,
                ),
                ("things", "page, first", "/console/incidents?kind=thing", browser),
                ("things", "JSON, first", "/v1/things", client),
                ("event timeline", "page", f"/console/events/{event_id}", browser),
                ("event timeline", "JSON", f"/v1/events/{event_id}", client),
                ("incident", "page", f"/console/incidents/incident/{incident_id}", browser),
                ("incident", "JSON", f"/v1/incidents/{incident_id}", client),
                ("channels", "page", "/console/channels", browser),
                ("api keys", "page", "/console/keys", browser),
                ("integrations", "page", "/console/integrations", browser),
                ("notifications", "page", "/console/notifications", browser),
            ]
            print(f"\n{'what':<16} {'request':<28} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>8}  path")
            for label, what, path, http in rows:
                try:
                    p50, p99, size = timed(http, path, args.requests)
                except RuntimeError as exc:
                    print(f"{label:<16} {what:<28} {'-':>8} {'-':>8} {'-':>8}  {exc}")
                    continue
                shown = path if len(path) < 60 else path[:57] + "..."
                print(f"{label:<16} {what:<28} {p50:8.1f} {p99:8.1f} {size:8d}  {shown}")

            print("\nEXPLAIN of each list query (scan nodes; integration lookups omitted):")
            now_q = (
                ("dead letters, first", lambda s: dead_letter_page(s, dead_letter_filter(), limit=50, cursor=None)),
                ("dead letters, reason", lambda s: dead_letter_page(
                    s, dead_letter_filter(reason="auth_failed"), limit=50, cursor=None)),
                ("dead letters, integration", lambda s: dead_letter_page(
                    s, dead_letter_filter(integration_id=i2), limit=50, cursor=None)),
                ("dead letters, deep", lambda s: dead_letter_page(
                    s, dead_letter_filter(), limit=50, cursor=deep["dead"])),
                ("events, first", lambda s: event_page(s, EventQuery(), limit=50, cursor=None)),
                ("events, project", lambda s: event_page(s, EventQuery(project="proj-3"), limit=50, cursor=None)),
                ("events, lifecycle key", lambda s: event_page(
                    s, EventQuery(text="release:proj-7:1.0.7"), limit=50, cursor=None)),
                ("events, deep", lambda s: event_page(s, EventQuery(), limit=50, cursor=deep["event"])),
                ("deliveries, first", lambda s: delivery_page(s, DeliveryQuery(), limit=50, cursor=None)),
                ("deliveries, dead", lambda s: delivery_page(s, DeliveryQuery(state="dead"), limit=50, cursor=None)),
                ("deliveries, integration", lambda s: delivery_page(
                    s, DeliveryQuery(integration_id=i2), limit=50, cursor=None)),
                ("deliveries, deep", lambda s: delivery_page(s, DeliveryQuery(), limit=50, cursor=deep["delivery"])),
                ("incidents, first", lambda s: lifecycle_page(
                    s, ADMIN, "incident", channel=None, project=None, is_open=None, severity=None, cursor=None,
                    limit=50)),
                ("incidents, deep", lambda s: lifecycle_page(
                    s, ADMIN, "incident", channel=None, project=None, is_open=None, severity=None,
                    cursor=deep["incident"], limit=50)),
                ("event timeline", lambda s: event_detail(s, ADMIN, event_id)),
                ("incident detail", lambda s: lifecycle_detail(s, ADMIN, "incident", incident_id)),
            )  # fmt: skip
            for name, run in now_q:
                for line in explain(engine, name, run):
                    print(line)
            engine.dispose()


if __name__ == "__main__":
    main()
