"""The OpenAPI 3.0 description of the local API (served at ``/openapi.json``).

Kept next to the handlers (terminal/api.py); tests/terminal/test_api_schema.py runs
schemathesis against a live daemon with it, so a handler and its description cannot drift.
"""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_IDEM = {"$ref": "#/components/parameters/IdempotencyKey"}
_TILL = {"name": "till", "in": "path", "required": True, "schema": {"type": "string"}}
_SALE = {"name": "sale", "in": "path", "required": True, "schema": {"type": "string"}}
_PUMP = {"name": "pump", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1, "maximum": 999}}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "malformed request, body or Host header, or a missing Idempotency-Key",
            401: "no bearer token, or one no client of this site has",
            403: "the client's role does not reach this lane or endpoint (or the card refused the PIN)",
            408: "the body did not arrive in time (api.body_timeout_s); the connection is closed",
            413: "the body is larger than 256 KiB",
            404: "no such till, sale, pump or request",
            409: "not possible in the lane's current state", 415: "body is not JSON",
            422: "invalid values (the message says which)",
            503: "the journal failed (restarting), or the pump or card does not answer (send it again)"}
    return {str(c): {"description": text[c], "content": {"application/json": {"schema": _ERROR}}} for c in codes}


def _json_body(schema: dict) -> dict:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict, code: int = 200, desc: str = "done") -> dict:
    return {str(code): {"description": desc, "content": {"application/json": {"schema": schema}}}}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document: every operation needs a client's bearer token (401 without,
    403 outside its role), and may answer 400 for a Host header that does not name the
    daemon; POSTs with a body may answer 408 and 413."""
    doc = _document()
    for item in doc["paths"].values():
        for op in item.values():
            extra = (400, 401, 403) + ((408, 413) if "requestBody" in op else ())
            op["responses"] = _errors(*extra) | op["responses"]
    return doc


def _document() -> dict[str, Any]:
    sale = {"$ref": "#/components/schemas/Sale"}
    post_errors = _errors(400, 404, 409, 415, 422, 503)
    return {
        "openapi": "3.0.3",
        "info": {"title": "edgepos local API", "version": "1",
                 "description": "Tills, pump consoles and operators on the site's loopback (a LAN "
                                "only with mutual TLS). Every call but this document needs a client's "
                                "bearer token; POSTs but the simulation's need an Idempotency-Key "
                                "header; see docs/local-api.md."},
        "security": [{"bearer": []}],
        "paths": {
            "/v1/health": {"get": {"operationId": "health", "responses": _ok({"type": "object"})}},
            "/v1/lanes": {"get": {"operationId": "lanes", "responses": _ok({"type": "object"})}},
            "/v1/journal": {"get": {
                "operationId": "journalTail",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000}},
                               {"name": "lane", "in": "query", "schema": {"type": "string"}}],
                "responses": _ok({"type": "object"}) | _errors(422)}},
            "/v1/requests/{key}": {"get": {
                "operationId": "requestStatus",
                "parameters": [{"name": "key", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{8,128}$"}}],
                "responses": _ok({"type": "object"}) | _errors(400, 404)}},
            "/v1/tills/{till}/sales": {"post": {
                "operationId": "openSale", "parameters": [_TILL, _IDEM],
                "requestBody": _json_body({"type": "object", "additionalProperties": False, "required": ["lines"],
                                           "properties": {"lines": {"type": "array", "minItems": 1, "maxItems": 500,
                                                                    "items": {"$ref": "#/components/schemas/Line"}}}}),
                "responses": _ok(sale, 201, "the sale is open") | post_errors}},
            "/v1/tills/{till}/sales/{sale}": {"get": {
                "operationId": "getSale", "parameters": [_TILL, _SALE],
                "responses": _ok(sale) | _errors(404)}},
            "/v1/tills/{till}/sales/{sale}/card": {"post": {
                "operationId": "attachCard", "parameters": [_TILL, _SALE, _IDEM],
                "requestBody": _json_body({"type": "object", "additionalProperties": False, "required": ["card_no"],
                                           "properties": {"card_no": {"type": "string", "pattern": "^[0-9]{13}$"}}}),
                "responses": _ok(sale) | post_errors}},
            "/v1/tills/{till}/sales/{sale}/quote": {"get": {
                "operationId": "quote",
                "parameters": [_TILL, _SALE, {"name": "payment_method", "in": "query", "schema": {"type": "string"}}],
                "responses": _ok({"$ref": "#/components/schemas/Quote"}) | _errors(404, 409, 422)}},
            "/v1/tills/{till}/sales/{sale}/commit": {"post": {
                "operationId": "commit", "parameters": [_TILL, _SALE, _IDEM],
                "requestBody": _json_body({"type": "object", "additionalProperties": False, "required": ["payment"],
                                           "properties": {"payment": {"$ref": "#/components/schemas/Payment"},
                                                          "payment_method": {"type": "string"}}}),
                "responses": _ok(sale, 200, "the decision (approved or declined, see result)") | post_errors}},
            "/v1/tills/{till}/sales/{sale}/void": {"post": {
                "operationId": "void", "parameters": [_TILL, _SALE, _IDEM],
                "responses": _ok(sale) | _errors(400, 404, 409, 503)}},
            "/v1/tills/{till}/returns": {"post": {
                "operationId": "returnSale", "parameters": [_TILL, _IDEM],
                "requestBody": _json_body({"type": "object", "additionalProperties": False,
                                           "required": ["sale_id", "returned_kop"],
                                           "properties": {"sale_id": {"type": "string"},
                                                          "returned_kop": {"type": "integer", "minimum": 1}}}),
                "responses": _ok({"type": "object"}) | post_errors}},
            **_pump_paths(post_errors),
            "/v1/tills/{till}/topups": {"post": {
                "operationId": "topUp", "parameters": [_TILL, _IDEM],
                "requestBody": _json_body({"type": "object", "additionalProperties": False,
                                           "required": ["card_no", "amount_kop"],
                                           "properties": {"card_no": {"type": "string"},
                                                          "amount_kop": {"type": "integer", "minimum": 1}}}),
                "responses": _ok({"type": "object"}) | post_errors}},
        },
        "components": {
            "securitySchemes": {"bearer": {
                "type": "http", "scheme": "bearer",
                "description": "The client's token; the site configuration keeps its SHA-256 and role."}},
            "parameters": {"IdempotencyKey": {
                "name": "Idempotency-Key", "in": "header", "required": True,
                "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{8,128}$"},
                "description": "A key unique to this request; a retry with the same key gets the first answer."}},
            "schemas": {
                "Error": {"type": "object", "required": ["error"],
                          "properties": {"error": {"type": "object", "required": ["code", "message"],
                                                   "properties": {"code": {"type": "string"},
                                                                  "message": {"type": "string"}}}}},
                "Line": {"type": "object", "additionalProperties": False, "required": ["category", "amount_kop"],
                         "properties": {"sku": {"type": "string", "maxLength": 64},
                                        "category": {"type": "string"},
                                        "amount_kop": {"type": "integer", "minimum": 0, "maximum": 1_000_000_000}}},
                "Payment": {"type": "object", "additionalProperties": False,
                            "properties": {"points": {"type": "integer", "minimum": 0},
                                           "card_balance_kop": {"type": "integer", "minimum": 0},
                                           "money_kop": {"type": "integer", "minimum": 0}}},
                "Sale": {"type": "object", "required": ["sale_id", "state", "total_kop", "lines"],
                         "properties": {"sale_id": {"type": "string"},
                                        "state": {"type": "string", "enum": ["open", "committed", "declined", "voided"]},
                                        "total_kop": {"type": "integer"}, "card": {"type": "string", "nullable": True},
                                        "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
                                        "result": {"type": "object", "nullable": True}}},
                **_PUMP_SCHEMAS,
                "Quote": {"type": "object",
                          "properties": {"sale_id": {"type": "string"}, "reason": {"type": "string"},
                                         "total_kop": {"type": "integer"}, "points_spendable": {"type": "integer"},
                                         "max_redeem_points": {"type": "integer"},
                                         "accrual_points": {"type": "integer"}, "balance_kop": {"type": "integer"},
                                         "payments_enabled": {"type": "boolean"},
                                         "offline_allowance_left": {"type": "integer"}}},
            },
        },
    }


def _pump_paths(post_errors: dict) -> dict[str, Any]:
    """The pump console's paths (terminal/fuel_api.py) and the simulation's hands."""
    pump = {"$ref": "#/components/schemas/Pump"}

    def post(op: str, schema: dict, body: dict | None = None, extra: tuple[int, ...] = ()) -> dict:
        out = {"operationId": op, "parameters": [_PUMP, _IDEM], "responses": _ok(schema) | post_errors | _errors(*extra)}
        if body is not None:
            out["requestBody"] = _json_body(body)
        return {"post": out}

    def sim(op: str, body: dict) -> dict:
        return {"post": {"operationId": op, "parameters": [_PUMP],
                         "description": "Simulation only (api.simulation, set by edgepos simulate); "
                                        "no Idempotency-Key: not journaled.",
                         "requestBody": _json_body(body),
                         "responses": _ok({"type": "object"}) | _errors(400, 404, 409, 415, 422)}}

    return {
        "/v1/pumps": {"get": {"operationId": "pumps", "responses": _ok(
            {"type": "object", "required": ["pumps"], "properties": {"pumps": {"type": "array", "items": pump}}})}},
        "/v1/pumps/{pump}": {"get": {"operationId": "getPump", "parameters": [_PUMP],
                                     "responses": _ok(pump) | _errors(404)}},
        "/v1/pumps/{pump}/pin": post("pumpPin", {"type": "object", "properties": {
            "verified": {"type": "boolean"}, "state": {"type": "string"}}},
            {"type": "object", "additionalProperties": False, "required": ["pin"],
             "properties": {"pin": {"type": "string", "pattern": "^[0-9]{4,12}$"}}}, extra=(403,)),
        "/v1/pumps/{pump}/authorize": post("pumpAuthorize", {"$ref": "#/components/schemas/FuelDecision"},
            {"type": "object", "additionalProperties": False, "required": ["product"],
             "properties": {"product": {"type": "string"},
                            "preset_volume_ml": {"type": "integer", "minimum": 1, "maximum": 1_000_000_000},
                            "preset_amount_kop": {"type": "integer", "minimum": 1,
                                                  "maximum": 1_000_000_000_000}}}),
        "/v1/pumps/{pump}/void": post("pumpVoid", {"type": "object"}),
        "/v1/pumps/{pump}/suspend": post("pumpSuspend", {"type": "object"}),
        "/v1/pumps/{pump}/resume": post("pumpResume", {"type": "object"}),
        "/v1/pumps/{pump}/stop": post("pumpStop", {"type": "object"}),
        "/v1/pumps/{pump}/reset": post("pumpReset", {"type": "object"}),
        "/v1/sim/pumps/{pump}/nozzle": sim("simNozzle", {
            "type": "object", "additionalProperties": False, "required": ["action"],
            "properties": {"action": {"type": "string", "enum": ["lift", "hang_up"]}, "product": {"type": "string"}}}),
        "/v1/sim/pumps/{pump}/link": sim("simLink", {
            "type": "object", "additionalProperties": False, "required": ["online"],
            "properties": {"online": {"type": "boolean"}}}),
        "/v1/sim/pumps/{pump}/knobs": sim("simKnobs", {
            "type": "object", "additionalProperties": False,
            "properties": {"time_scale": {"type": "number"},
                           "stop_early_at_ml": {"type": "integer", "minimum": 1, "nullable": True},
                           "go_offline_at_ml": {"type": "integer", "minimum": 1, "nullable": True},
                           "lose_confirms": {"type": "integer", "minimum": 0, "maximum": 100},
                           "meter_untracked": {
                               "type": "object", "additionalProperties": False,
                               "required": ["product", "volume_ml", "price_kop_per_l"],
                               "properties": {"product": {"type": "string"},
                                              "volume_ml": {"type": "integer", "minimum": 1},
                                              "price_kop_per_l": {"type": "integer", "minimum": 1}}}}}),
    }


_NULLABLE_INT = {"type": "integer", "nullable": True}
_NULLABLE_STR = {"type": "string", "nullable": True}
_PUMP_SCHEMAS: dict[str, Any] = {
    "Pump": {"type": "object", "required": ["pump", "state", "pump_state"],
             "properties": {"pump": {"type": "integer"}, "lane": {"type": "string"},
                            "state": {"type": "string", "enum": ["idle", "card_read", "pin_ok", "authorized",
                                                                 "dispensing", "completing", "recovering"]},
                            "pump_state": {"type": "string"}, "card": _NULLABLE_STR, "notice": _NULLABLE_STR,
                            "card_present": {"type": "boolean"}, "pin_tries_left": _NULLABLE_INT,
                            "txn": {"type": "object", "nullable": True},
                            "last_delivery": {"type": "object", "nullable": True},
                            "pump_offline": {"type": "boolean"}, "recovery_pending": {"type": "integer"}}},
    "FuelDecision": {"type": "object", "required": ["approved", "reason", "volume_ml", "amount_kop"],
                     "properties": {"pump": {"type": "integer"}, "txn_id": {"type": "string"},
                                    "approved": {"type": "boolean"}, "reason": {"type": "string"},
                                    "product": {"type": "string"}, "volume_ml": {"type": "integer"},
                                    "amount_kop": {"type": "integer"},
                                    "unit_price_kop_per_l": {"type": "integer"},
                                    "list_price_kop_per_l": {"type": "integer"},
                                    "binding_limit_id": _NULLABLE_INT, "card": {"type": "string"},
                                    "exceptions": {"type": "array", "items": {
                                        "type": "object", "required": ["reason", "limit_id"],
                                        "properties": {"reason": {"type": "string"},
                                                       "limit_id": _NULLABLE_INT}}},
                                    "state": {"type": "string"}, "sale_no": {"type": "integer"}}},
}
