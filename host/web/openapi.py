"""The fleet API's OpenAPI 3.1 description (served at ``/api/v1/openapi.json``; the
schemathesis test checks the live API against it)."""

from __future__ import annotations

from typing import Any

from authz.fuel_model import Period, ProductGroup
from authz.money import MAX_AMOUNT_KOP, MAX_VOLUME_ML
from host.documents import DEFAULT_PAGE as DEFAULT_DETAIL_PAGE
from host.documents import MAX_PAGE as MAX_DETAIL_PAGE

__all__ = ["document"]

_ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message"],
    "properties": {"message": {"type": "string"}, "field": {"type": "string"}}}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict:
    text = {401: "no valid API token", 404: "no such contract or card (or not the company's)",
            409: "refused by the host's rules", 422: "a bad field (named in error.field)"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _list_of(name: str) -> dict:
    return {"type": "object", "required": ["items", "total", "next_offset"], "properties": {
        "items": {"type": "array", "items": _ref(name)}, "total": {"type": "integer", "minimum": 0},
        "next_offset": {"type": ["integer", "null"]}}}


# written as digit strings: a query string has no types, and a schema "integer" lets a
# generator's "wrong type" case serialise to the same text as a right one
_PAGING = [
    {"name": "limit", "in": "query", "required": False, "description": "1..500 (default 100)",
     "schema": {"type": "string", "pattern": "^(500|[1-4][0-9]{2}|[1-9][0-9]?)$"}},
    {"name": "offset", "in": "query", "required": False, "description": "0..1000000000 (default 0)",
     "schema": {"type": "string", "pattern": "^(0|[1-9][0-9]{0,8})$"}},
]
_CID = {"name": "contract_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}}
_CARD = {"name": "card_no", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[0-9]{16}$"}}
_LID = {"name": "limit_id", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 0,
                                                                        "maximum": 2**31 - 1}}
_IDEM = {"name": "Idempotency-Key", "in": "header", "required": True,
         "schema": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": "^[!-~]+$"}}

_FORMAT = {"name": "format", "in": "query", "schema": {"enum": ["csv", "pdf"]}, "description": "default pdf"}
_DOCUMENT = {"description": "the document", "content": {
    "text/csv": {"schema": {"type": "string"}},
    "application/pdf": {"schema": {"type": "string", "format": "binary"}}}}

_DAY = "(mon|tue|wed|thu|fri|sat|sun)"
_DAYS = f"{_DAY}(-{_DAY})?"
_WINDOW = f"^{_DAYS}(,{_DAYS})*,([01][0-9]|2[0-3]):[0-5][0-9]-(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
#: A card's fleet controls (issue 11), as answered and as a PUT .../controls body.
_CONTROLS = {
    "products": {"type": ["array", "null"], "maxItems": 1000,
                 "items": {"type": "string", "minLength": 1, "maxLength": 32},
                 "description": "the only products the card may buy (each of a group it may buy); null: every "
                                "product of its groups"},
    "windows": {"type": "array", "maxItems": 64, "items": {"type": "string", "maxLength": 200, "pattern": _WINDOW},
                "description": "when it may buy, in the contract's zone: DAYS,HH:MM-HH:MM (mon-fri,07:00-19:00; "
                               "sat,22:00-06:00 crosses midnight); empty: any time"},
    "stations": {"oneOf": [{"enum": ["network", "home-region"]},
                           {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
                            "minItems": 1, "maxItems": 1000}],
                 "description": "the whole network, the contract's home region, or these stations"},
    "on_breach": {"enum": ["decline", "alert"],
                  "description": "what a purchase outside products, windows or stations does"}}


def document() -> dict[str, Any]:
    """The OpenAPI document."""
    write_errors = _errors(401, 404, 409, 422)
    return {
        "openapi": "3.1.0",
        "info": {"title": "edgepos fleet API", "version": "1.0.0",
                 "description": "Contracts, cards, limits, blocks and transactions of a fleet company. Money in "
                                "kopecks, volumes in millilitres. Every write takes an Idempotency-Key."},
        "components": {
            "securitySchemes": {"token": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": _ERROR,
                "Contract": {"type": "object", "required": ["contract_id", "name", "tz", "balance_kop",
                                                             "credit_line_kop", "available_kop"], "properties": {
                    "contract_id": {"type": "integer"}, "name": {"type": "string"}, "tz": {"type": "string"},
                    "balance_kop": {"type": "integer"}, "credit_line_kop": {"type": "integer"},
                    "available_kop": {"type": "integer"}}},
                "Limit": {"type": "object", "required": ["limit_id", "unit", "amount", "period", "scope"], "properties": {
                    "limit_id": {"type": "integer"}, "unit": {"enum": ["rub", "litres", "purchases"]},
                    "amount": {"type": "integer", "description": "kopecks (rub), millilitres (litres) or a count "
                                                                 "(purchases: each delivery of more than nothing)"},
                    "on_breach": {"enum": ["decline", "alert"]},
                    "period": {"enum": [p.name.lower() for p in Period]},
                    "scope": {"enum": ["all", "group", "product"]},
                    "group": {"type": ["string", "null"]}, "product": {"type": ["string", "null"]}}},
                "LimitIn": {"type": "object", "required": ["unit", "amount", "period"], "properties": {
                    "unit": {"enum": ["rub", "litres", "purchases"]},
                    "amount": {"type": "integer", "minimum": 0, "maximum": min(MAX_AMOUNT_KOP, MAX_VOLUME_ML),
                               "description": "kopecks (rub), millilitres (litres) or a count (purchases, which "
                                              "needs a period other than transaction)"},
                    "on_breach": {"enum": ["decline", "alert"],
                                  "description": "decline (default): the limit bounds the purchase; alert: "
                                                 "approve past it and raise an alert"},
                    "period": {"enum": [p.name.lower() for p in Period]},
                    "scope": {"enum": ["all", "group", "product"]},
                    "group": {"enum": [g.name.lower() for g in ProductGroup]},
                    "product": {"type": "string", "minLength": 1, "maxLength": 32}},
                    "anyOf": [{"properties": {"scope": {"const": "all"}}},
                              {"required": ["scope", "group"], "properties": {"scope": {"const": "group"}}},
                              {"required": ["scope", "product"], "properties": {"scope": {"const": "product"}}}]},
                "Card": {"type": "object", "required": ["card_no", "contract_id", "status", "expires_on", "groups",
                                                         "limits"], "properties": {
                    "card_no": {"type": "string"}, "contract_id": {"type": "integer"},
                    "status": {"enum": ["active", "blocked"]}, "expires_on": {"type": "string", "format": "date"},
                    "groups": {"type": "array", "items": {"type": "string"}},
                    "limits": {"type": "array", "items": _ref("Limit")},
                    "controls": _ref("Controls")}},
                "Controls": {"type": "object", "required": ["products", "windows", "stations", "on_breach"],
                             "properties": _CONTROLS},
                "ControlsIn": {"type": "object", "additionalProperties": False, "properties": _CONTROLS,
                               "description": "the controls to change; a field not given stays as it is"},
                "Transaction": {"type": "object", "required": ["at_utc_s", "card_no", "amount_kop", "volume_ml"],
                                "properties": {
                    "at_local": {"type": "string"}, "at_utc_s": {"type": "integer"}, "site_id": {"type": "string"},
                    "station_id": {"type": ["integer", "null"]}, "card_no": {"type": "string"},
                    "product": {"type": ["string", "null"]}, "volume_ml": {"type": "integer"},
                    "unit_price_kop_per_l": {"type": ["integer", "null"]}, "amount_kop": {"type": "integer"},
                    "record_id": {"type": "string"}}},
                "DetailLine": {"type": "object", "required": [
                    "record_id", "at_utc_s", "at_local", "card_no", "site_id", "station_id", "station_name",
                    "station_address", "product", "product_name", "volume_ml", "list_price_kop_per_l",
                    "price_kop_per_l", "discount_kop", "amount_kop"], "properties": {
                    "record_id": {"type": "string"}, "at_utc_s": {"type": "integer"},
                    "at_local": {"type": "string", "description": "YYYY-MM-DD HH:MM:SS in the contract's zone"},
                    "card_no": {"type": "string"}, "site_id": {"type": "string"},
                    "station_id": {"type": ["integer", "null"]}, "station_name": {"type": "string"},
                    "station_address": {"type": "string"}, "product": {"type": "string"},
                    "product_name": {"type": "string"}, "volume_ml": {"type": "integer"},
                    "list_price_kop_per_l": {"type": ["integer", "null"]},
                    "price_kop_per_l": {"type": ["integer", "null"]},
                    "discount_kop": {"type": "integer"}, "amount_kop": {"type": "integer"}}},
                "DetailPage": {"type": "object", "required": ["contract_id", "tz", "first", "last", "items",
                                                               "next_cursor"], "properties": {
                    "contract_id": {"type": "integer"}, "tz": {"type": "string"},
                    "first": {"type": "string", "format": "date"}, "last": {"type": "string", "format": "date"},
                    "items": {"type": "array", "items": _ref("DetailLine")},
                    "next_cursor": {"type": ["string", "null"],
                                    "description": "pass back as cursor for the next page; null: the last page"}}},
            },
        },
        "security": [{"token": []}],
        "paths": {
            "/api/v1/contracts": {"get": {"operationId": "listContracts", "parameters": _PAGING, "responses": {
                "200": _json(_list_of("Contract"), "the company's contracts"), **_errors(401, 422)}}},
            "/api/v1/contracts/{contract_id}": {"get": {"operationId": "getContract", "parameters": [_CID],
                                                        "responses": {"200": _json(_ref("Contract"), "a contract"),
                                                                      **_errors(401, 404)}}},
            "/api/v1/contracts/{contract_id}/cards": {"get": {"operationId": "listCards", "parameters": [_CID, *_PAGING],
                                                              "responses": {"200": _json(_list_of("Card"), "its cards"),
                                                                            **_errors(401, 404, 422)}}},
            "/api/v1/contracts/{contract_id}/transactions": {"get": {
                "operationId": "listTransactions",
                "parameters": [_CID, *_PAGING,
                               {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                               {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                               {"name": "card_no", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json(_list_of("Transaction"), "purchases in the period (local days)"),
                              **_errors(401, 404, 422)}}},
            "/api/v1/contracts/{contract_id}/transaction-detail": {"get": {
                "operationId": "getTransactionDetail",
                "parameters": [_CID,
                               {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
                               {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
                               {"name": "card_no", "in": "query",
                                "schema": {"type": "string", "pattern": "^[0-9]{16}$"}},
                               {"name": "cursor", "in": "query", "description": "next_cursor of the page before",
                                "schema": {"type": "string", "pattern": "^[0-9]{1,18}\\.[0-9]{1,18}$"}},
                               {"name": "limit", "in": "query", "description": f"1..{MAX_DETAIL_PAGE} "
                                f"(default {DEFAULT_DETAIL_PAGE})",
                                "schema": {"type": "string", "pattern": "^(1000|[1-9][0-9]{0,2})$"}}],
                "responses": {"200": _json(_ref("DetailPage"), "a page of the purchases in the period (local "
                                                               "days), in time order"),
                              **_errors(401, 404, 409, 422)}}},
            "/api/v1/contracts/{contract_id}/documents/detail": {"get": {
                "operationId": "getDetailDocument",
                "description": "the transaction detail of local days from..to as CSV or PDF",
                "parameters": [_CID, _FORMAT,
                               {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"},
                                "description": "default: the month's first day"},
                               {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"},
                                "description": "default: today"}],
                "responses": {"200": _DOCUMENT, **_errors(401, 404, 409, 422)}}},
            "/api/v1/contracts/{contract_id}/documents/{kind}": {"get": {
                "operationId": "getDocument",
                "description": "a monthly document as CSV or PDF: statement, report (transaction report), "
                               "invoice (счёт-фактура), act (reconciliation act); the last three of a closed "
                               "month only (409 otherwise)",
                "parameters": [_CID, _FORMAT,
                               {"name": "kind", "in": "path", "required": True,
                                "schema": {"enum": ["statement", "report", "invoice", "act"]}},
                               {"name": "month", "in": "query", "description": "YYYY-MM (default: this month)",
                                "schema": {"type": "string", "pattern": "^20[0-9]{2}-(0[1-9]|1[0-2])$"}}],
                "responses": {"200": _DOCUMENT, **_errors(401, 404, 409, 422)}}},
            "/api/v1/cards/{card_no}": {"get": {"operationId": "getCard", "parameters": [_CARD], "responses": {
                "200": _json(_ref("Card"), "a card"), **_errors(401, 404)}}},
            "/api/v1/cards/{card_no}/limits/{limit_id}": {
                "put": {"operationId": "putLimit", "parameters": [_CARD, _LID, _IDEM],
                        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("LimitIn")}}},
                        "responses": {"200": _json(_ref("Card"), "the card with the limit set"), **write_errors}},
                "delete": {"operationId": "deleteLimit", "parameters": [_CARD, _LID, _IDEM],
                           "responses": {"200": _json(_ref("Card"), "the card without the limit"), **write_errors}}},
            "/api/v1/cards/{card_no}/controls": {
                "put": {"operationId": "putControls", "parameters": [_CARD, _IDEM],
                        "requestBody": {"required": True,
                                        "content": {"application/json": {"schema": _ref("ControlsIn")}}},
                        "responses": {"200": _json(_ref("Card"), "the card with its controls changed"),
                                      **write_errors}}},
            "/api/v1/cards/{card_no}/block": {"post": {"operationId": "blockCard", "parameters": [_CARD, _IDEM],
                                                       "responses": {"200": _json(_ref("Card"), "blocked"),
                                                                     **write_errors}}},
            "/api/v1/cards/{card_no}/unblock": {"post": {"operationId": "unblockCard", "parameters": [_CARD, _IDEM],
                                                         "responses": {"200": _json(_ref("Card"), "active again"),
                                                                       **write_errors}}},
        },
    }
