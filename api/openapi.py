"""The OpenAPI document, with each provider's config schema where an integration is created or replaced.

At run time `IntegrationIn.config` is a free-form object validated by the provider named beside it (so errors
read `config.url: ...` and secrets are never echoed). The document instead shows the body as a union of one
variant per provider (`provider` fixed, `config` that provider's model), discriminated by `provider`, so
`/docs` lists every provider's fields. It is derived from the provider registry, so a new provider appears by
itself.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import Field, TypeAdapter, create_model

from api.schemas import IntegrationIn
from providers import registry

UNION_NAME = "IntegrationInByProvider"
# (path, method) of the operations whose body is an `IntegrationIn`
_BODIES = (("/v1/integrations", "post"), ("/v1/integrations/{integration_id}", "put"))


def _integration_union() -> dict[str, Any]:
    variants = []
    for name in registry.names():
        fixed: Any = Literal[name]  # a type built from data: Any for the type checker
        variants.append(
            create_model(
                f"IntegrationIn_{name}",
                __base__=IntegrationIn,
                provider=(fixed, ...),
                config=(registry.config_model(name), ...),
            )
        )
    union: Any = Union[tuple(variants)]  # noqa: UP007 (built at run time from the registry)
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[union, Field(discriminator="provider")])
    return adapter.json_schema(ref_template="#/components/schemas/{model}")


def install(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        union = _integration_union()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(union.pop("$defs", {}))
        components[UNION_NAME] = union
        for path, method in _BODIES:
            body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
            body["schema"] = {"$ref": f"#/components/schemas/{UNION_NAME}"}
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
