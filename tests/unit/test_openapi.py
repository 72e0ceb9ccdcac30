"""The OpenAPI builder: every route, parameter and struct of an API appears in its document."""

from __future__ import annotations

import msgspec
import pytest

from shoal.http.openapi import ErrorBody, Query, Route, combine, document


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


def test_a_body_that_is_not_json_is_named_by_its_media_type_and_plain_errors_by_text() -> None:
    doc = document(
        "files", "1", (Route("GET", "/f", "a file", media="application/octet-stream", status=206),), plain_errors=True
    )
    responses = doc["paths"]["/f"]["get"]["responses"]
    assert responses["206"]["content"] == {"application/octet-stream": {}}
    assert set(responses["default"]["content"]) == {"text/plain"}
    assert "ErrorBody" not in doc["components"]["schemas"]


def test_combined_documents_hold_both_apis_and_refuse_a_clash() -> None:
    things = document("things", "1", ROUTES)
    other = document("other", "2", (Route("GET", "/v1/other", "other", response=Answer),))
    combined = combine([things, other])
    assert set(combined["paths"]) == set(things["paths"]) | {"/v1/other"}
    assert combined["info"]["title"] == "things; other"
    assert "/v1/other" not in things["paths"]  # the parts are left as they were

    class Answer2(msgspec.Struct, frozen=True):
        ok: int

    clashing = document("clash", "3", (Route("GET", "/v1/x", "x", response=Answer2),))
    clashing["components"]["schemas"]["Answer"] = clashing["components"]["schemas"].pop("Answer2")
    with pytest.raises(ValueError, match="schemas Answer"):
        combine([things, clashing])
    with pytest.raises(ValueError, match="paths /v1/things"):
        combine([things, document("again", "1", (Route("GET", "/v1/things", "other", response=Ask),))])
