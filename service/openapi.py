"""The OpenAPI document as the API behaves: an invalid value is answered 400 in OpenAI's error shape
(service/errors.py), so that is what each route documents instead of FastAPI's default 422."""

from __future__ import annotations

from fastapi import FastAPI

from service.errors import DESCRIPTIONS

BAD_REQUEST = {
    "description": DESCRIPTIONS[400],
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}},
}


def install_openapi(app: FastAPI) -> None:
    build = app.openapi  # FastAPI's, which caches the document on the app

    def openapi() -> dict:
        schema = build()
        for path in schema["paths"].values():
            for operation in path.values():
                if operation["responses"].pop("422", None) is not None:
                    operation["responses"].setdefault("400", BAD_REQUEST)
        for unused in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(unused, None)
        return schema

    app.openapi = openapi
