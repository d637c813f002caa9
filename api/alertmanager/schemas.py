"""Alertmanager's webhook payload (version 4) and Grafana's webhook contact point, which extends it.

Strict like every ingest body: a top-level field neither sends is 422 `unknown_field`. Grafana's documented
extras (`orgId`, `state`, `title`, `message` on the notification; `silenceURL`, `dashboardURL`, `panelURL`,
`imageURL`, `values`, `valueString` on an alert) are accepted. Times stay the RFC 3339 strings the sender wrote;
only the mapping reads them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

#: labels and annotations are free-form maps of strings; bounded so one alert cannot fill the event row
LabelMap = Annotated[
    dict[
        Annotated[str, StringConstraints(max_length=256)], Annotated[str, StringConstraints(max_length=4096)]
    ],
    Field(max_length=128),
]
Text = Annotated[str, StringConstraints(max_length=4096)]
UrlText = Annotated[str, StringConstraints(max_length=2048)]
Status = Literal["firing", "resolved"]


class _Forbid(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlertIn(_Forbid):
    status: Status
    labels: LabelMap = Field(default_factory=dict)
    annotations: LabelMap = Field(default_factory=dict)
    # the wire's camelCase names, kept so the schema reads like Alertmanager's documentation
    startsAt: Annotated[str, StringConstraints(max_length=64)] = ""
    endsAt: Annotated[str, StringConstraints(max_length=64)] = ""
    generatorURL: UrlText = ""
    fingerprint: Annotated[str, StringConstraints(max_length=64)] = ""
    # Grafana's extras
    silenceURL: UrlText | None = None
    dashboardURL: UrlText | None = None
    panelURL: UrlText | None = None
    imageURL: UrlText | None = None
    values: dict[str, Any] | None = None
    valueString: Text | None = None


class AlertmanagerIn(_Forbid):
    version: Annotated[str, StringConstraints(max_length=16)] = "4"
    groupKey: Annotated[str, StringConstraints(min_length=1, max_length=4096)]
    truncatedAlerts: Annotated[int, Field(ge=0)] = 0
    status: Status
    receiver: Annotated[str, StringConstraints(max_length=256)] = ""
    groupLabels: LabelMap = Field(default_factory=dict)
    commonLabels: LabelMap = Field(default_factory=dict)
    commonAnnotations: LabelMap = Field(default_factory=dict)
    externalURL: UrlText = ""
    alerts: Annotated[list[AlertIn], Field(min_length=1, max_length=1000)]
    # Grafana's extras
    orgId: int | None = None
    state: Annotated[str, StringConstraints(max_length=32)] | None = None
    title: Text | None = None
    message: Annotated[str, StringConstraints(max_length=16384)] | None = None
