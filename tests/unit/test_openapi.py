"""The OpenAPI builder: every route, parameter and struct of an API appears in its document."""

from __future__ import annotations

import msgspec

from shoal.http.openapi import ErrorBody, Query, Route, document


class Ask(msgspec.Struct, frozen=True):
    name: str
    count: int = 1


class Answer(msgspec.Struct, frozen=True):
    ok: bool


ROUTES = (
    Route("POST", "/v1/things/{thing}", "make a thing", request=Ask, response=Answer, status=201, auth=True),
    Route("GET", "/v1/things", "list things", response=list[Answer], query=(Query("since", "a sequence", int),)),
)


def test_the_document_names_every_route_parameter_and_struct() -> None:
    doc = document("things", "1", ROUTES)
    assert doc["openapi"] == "3.1.0"
    post = doc["paths"]["/v1/things/{thing}"]["post"]
    assert post["parameters"] == [{"name": "thing", "in": "path", "required": True, "schema": {"type": "string"}}]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Ask"}
    assert post["responses"]["201"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Answer"}
    assert post["security"] == [{"bearer": []}]
    get = doc["paths"]["/v1/things"]["get"]
    assert get["parameters"][0]["schema"] == {"type": "integer"}
    assert get["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert "security" not in get
    schemas = doc["components"]["schemas"]
    assert set(schemas) == {"Ask", "Answer", "ErrorBody"}
    assert schemas["Ask"]["required"] == ["name"]
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"


def test_errors_are_described_once_for_every_operation() -> None:
    doc = document("things", "1", ROUTES)
    for operations in doc["paths"].values():
        for operation in operations.values():
            assert operation["responses"]["default"]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
    assert msgspec.json.decode(b'{"error": "no"}', type=ErrorBody).error == "no"
