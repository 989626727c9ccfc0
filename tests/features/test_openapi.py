"""OpenAPI (reference §17): the generated 3.1 spec at /openapi.json — valid for
openapi-spec-validator, shaped as Robyn's where Robyn's suite and apps look at it — a custom
spec file served verbatim, ``--disable-openapi``; and schemathesis against the demo app's
spec (a real server) finding no 5xx and no answer that contradicts the spec."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from openapi_spec_validator import validate

from stonechat import Config, Robyn
from stonechat.openapi import Components, Contact, ExternalDocumentation, License, OpenAPI, OpenAPIInfo, Server
from stonechat.testing import TestClient

ROOT = Path(__file__).resolve().parent.parent.parent

APP = r'''
import datetime, enum, uuid
from typing import Literal, Optional, TypedDict
from pydantic import BaseModel
from stonechat import Robyn, Request, Response, SubRouter, JsonBody, QueryParams, StreamingResponse
from stonechat.authentication import AuthenticationHandler, BearerGetter
from stonechat.types import Body, JSONResponse
from stonechat import Identity

app = Robyn(__file__)
app.set_response_header("x-app", "1")

calls = []

@app.before_request()
def count(request):
    calls.append(request.url.path)
    return request

class Color(enum.Enum):
    red = "red"
    blue = "blue"

class Address(BaseModel):
    street: str
    zip_code: str

class UserCreate(BaseModel):
    name: str
    age: int
    active: bool = True
    address: Optional[Address] = None

class Initial(Body):
    is_present: bool
    letter: str | None

class FullName(Body):
    first: str
    initial: Initial

class CreateItemBody(Body):
    name: FullName
    price: float

class CreateItemResponse(JSONResponse):
    success: bool
    items_changed: int

class ItemQuery(QueryParams):
    required: bool
    page: int

class Temperature(JsonBody):
    fahrenheit: float

class Pair(TypedDict):
    name: str
    value: int

class Error(JSONResponse):
    message: str

@app.get("/", openapi_name="Index")
def index() -> str:
    """The root."""
    return "hello"

@app.get("/items/:id", openapi_tags=["items"])
def get_item(id: int, q: str = "", limit: Optional[int] = None, tags: list[str] = None,
             color: Color = Color.red, when: Optional[uuid.UUID] = None, request: Request = None) -> dict:
    """One item.

    Longer text."""
    return {"id": id}

@app.post("/openapi_request_body")
def create_item(request, body: CreateItemBody, query: ItemQuery) -> CreateItemResponse:
    return CreateItemResponse(success=True, items_changed=2)

@app.post("/json_body/typed")
def json_typed(data: Temperature) -> dict:
    return {"c": (data["fahrenheit"] - 32) * 5 / 9}

@app.post("/json_body/bare")
def json_bare(data: JsonBody):
    return data

@app.post("/typeddict")
def typeddict(data: Pair) -> Pair:
    return data

@app.post("/pydantic/user", openapi_tags=["pydantic"], status_code=201)
def pydantic_user(user: UserCreate) -> UserCreate:
    """Create a user"""
    return user

@app.post("/pydantic/list", openapi_tags=["pydantic"])
def pydantic_list(user: UserCreate) -> list[UserCreate]:
    return [user]

@app.get("/response_model", response_model=UserCreate)
def with_response_model() -> dict:
    return {"name": "a", "age": 1}

@app.get("/responses", responses={404: "Item not found", 422: {"description": "Validation error", "model": Error},
                                  "default": {"description": "Anything else"}})
def with_responses() -> dict:
    return {}

@app.get("/datetime")
def when() -> datetime.datetime:
    return datetime.datetime(2024, 1, 2, 3, 4, 5)

@app.get("/literal")
def literal() -> Literal["a", "b"]:
    return "a"

@app.get("/bytes")
def raw() -> bytes:
    return b"\x00\x01"

@app.get("/nothing")
def nothing() -> None:
    return None

@app.delete("/gone", status_code=204)
def gone():
    return None

@app.get("/union")
def union() -> dict[str, int] | list[int]:
    return [1]

@app.get("/deprecated", deprecated=True)
def old() -> str:
    return "old"

@app.get("/hidden", include_in_schema=False)
def hidden() -> str:
    return "hidden"

@app.get("/files/*rest")
def files(rest: str) -> str:
    return rest

@app.connect("/tunnel")
def tunnel():
    return "connect is no Path Item field"

@app.get("/stream")
def stream() -> StreamingResponse:
    return StreamingResponse(iter(["a"]), media_type="text/plain")

@app.get("/secret", auth_required=True)
def secret():
    return "secret"

@app.get("/query_params_default")
def qp_default(query_params=ItemQuery):
    return "x"

def added(request):
    return "added"

app.add_route("GET", "/added", added)

sub = SubRouter(__file__, prefix="/sub")

@sub.post("/openapi_test", openapi_tags=["sub tag"])
def sub_route():
    """Sub route"""
    return "sub"

tagged = SubRouter(prefix="/tagged", tags=["tagged"])

@tagged.get("/:name")
def tagged_route(name: str):
    return name

app.include_router(sub)
app.include_router(tagged)

class Handler(AuthenticationHandler):
    def authenticate(self, request):
        return Identity(claims={}) if request.headers.get("authorization") == "Bearer ok" else None

app.configure_authentication(Handler(token_getter=BearerGetter()))

@app.get("/calls")
def seen() -> list:
    return calls

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


@pytest.fixture(scope="module")
def spec(server) -> dict:
    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    return response.json()


def op(spec: dict, path: str, method: str = "get") -> dict:
    return spec["paths"][path][method]


def json_schema(response_or_body: dict) -> dict:
    return response_or_body["content"]["application/json"]["schema"]


def test_the_generated_spec_is_valid_openapi_31(spec):
    validate(spec)  # raises with the first error
    assert spec["openapi"] == "3.1.0"
    assert set(spec) == {"openapi", "info", "paths", "components", "servers", "externalDocs"}
    assert spec["info"] == {"title": "Robyn API", "version": "1.0.0"}  # no nulls (Robyn writes them)
    assert spec["externalDocs"]["url"] == "/docs"


def test_paths_and_path_parameters(spec):
    item = op(spec, "/items/{id}")
    assert item["parameters"][0] == {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
    assert op(spec, "/tagged/{name}")["parameters"][0]["schema"] == {"type": "string"}
    wildcard = op(spec, "/files/{rest}")
    assert wildcard["parameters"] == [{"name": "rest", "in": "path", "required": True, "schema": {"type": "string"}}]


def test_individual_query_parameters_are_documented_with_their_types(spec):
    params = {p["name"]: p for p in op(spec, "/items/{id}")["parameters"] if p["in"] == "query"}
    assert list(params) == ["q", "limit", "tags", "color", "when"]  # not request: it is injected
    assert params["q"] == {"name": "q", "in": "query", "required": False, "schema": {"type": "string"}}
    assert params["limit"]["schema"] == {"type": "integer"} and not params["limit"]["required"]
    assert params["tags"]["schema"] == {"type": "array", "items": {"type": "string"}}
    assert params["color"]["schema"] == {"type": "string", "enum": ["red", "blue"]}
    assert params["when"]["schema"] == {"type": "string", "format": "uuid"}


def test_summary_description_and_tags(spec):
    index = op(spec, "/")
    assert index["summary"] == "Index" and index["description"] == "The root." and index["tags"] == ["get"]
    assert op(spec, "/items/{id}")["description"] == "One item.\n\nLonger text."
    assert op(spec, "/items/{id}")["tags"] == ["items"]
    assert op(spec, "/json_body/bare", "post")["description"] == "No description provided"
    assert op(spec, "/json_body/bare", "post")["tags"] == ["post"]  # a decorator's default: the method
    assert op(spec, "/added")["tags"] == []  # add_route's default, as Robyn
    assert list(op(spec, "/items/{id}")) == ["summary", "description", "parameters", "tags", "responses"]


def test_subrouter_routes_and_tags(spec):
    sub = op(spec, "/sub/openapi_test", "post")
    assert sub["description"] == "Sub route" and sub["tags"] == ["sub tag"]
    assert op(spec, "/tagged/{name}")["tags"] == ["tagged", "get"]  # the router's tags lead


def test_body_subclass_request_body_and_query_params_class(spec):
    create = op(spec, "/openapi_request_body", "post")
    assert create["parameters"] == [
        {"name": "required", "in": "query", "required": False, "schema": {"type": "boolean"}},
        {"name": "page", "in": "query", "required": False, "schema": {"type": "integer"}},
    ]
    schema = json_schema(create["requestBody"])
    assert schema["type"] == "object" and set(schema["properties"]) == {"name", "price"}
    assert schema["properties"]["price"] == {"title": "Price", "type": "number"}
    name = schema["properties"]["name"]
    assert name["type"] == "object" and set(name["properties"]) == {"first", "initial"}
    letter = name["properties"]["initial"]["properties"]["letter"]
    assert letter["anyOf"] == [{"type": "string"}, {"type": "null"}]
    response = json_schema(create["responses"]["200"])
    assert response["properties"]["success"]["type"] == "boolean"
    assert response["properties"]["items_changed"]["type"] == "integer"
    assert op(spec, "/query_params_default")["parameters"][0]["name"] == "required"


def test_json_body_and_typeddict_bodies(spec):
    typed = op(spec, "/json_body/typed", "post")
    assert json_schema(typed["requestBody"])["properties"] == {"fahrenheit": {"title": "Fahrenheit", "type": "number"}}
    assert typed["requestBody"]["required"] is True  # no body is not JSON: 400
    assert "400" in typed["responses"]
    assert json_schema(op(spec, "/json_body/bare", "post")["requestBody"]) == {"type": "object", "properties": {}}
    pair = op(spec, "/typeddict", "post")
    assert json_schema(pair["requestBody"])["properties"]["value"] == {"title": "Value", "type": "integer"}
    assert set(json_schema(pair["responses"]["200"])["properties"]) == {"name", "value"}


def test_pydantic_bodies_and_returns_use_the_models_schema_and_components(spec):
    user = op(spec, "/pydantic/user", "post")
    assert user["tags"] == ["pydantic"] and user["description"] == "Create a user"
    body = json_schema(user["requestBody"])
    assert body["title"] == "UserCreate" and body["type"] == "object"
    assert set(body["required"]) == {"name", "age"} and body["properties"]["active"]["default"] is True
    assert user["requestBody"]["required"] is True
    assert body["properties"]["address"]["anyOf"][0] == {"$ref": "#/components/schemas/Address"}
    assert spec["components"]["schemas"]["Address"]["properties"]["zip_code"]["title"] == "Zip Code"
    assert set(user["responses"]) == {"201", "422"}  # status_code= is the success key
    assert json_schema(user["responses"]["201"])["title"] == "UserCreate"
    error = json_schema(user["responses"]["422"])
    assert error == {"$ref": "#/components/schemas/ValidationErrorBody"}
    assert spec["components"]["schemas"]["ValidationErrorBody"]["required"] == ["detail", "error"]
    listing = json_schema(op(spec, "/pydantic/list", "post")["responses"]["200"])
    assert listing["type"] == "array" and listing["items"]["title"] == "UserCreate"
    assert json_schema(op(spec, "/response_model")["responses"]["200"])["title"] == "UserCreate"


def test_declared_responses_are_added(spec):
    responses = op(spec, "/responses")["responses"]
    assert responses["404"] == {"description": "Item not found"}
    assert responses["422"]["description"] == "Validation error"
    assert "message" in json_schema(responses["422"])["properties"]
    assert responses["default"] == {"description": "Anything else"}


def test_success_media_types_follow_what_the_route_sends(spec):
    content = lambda path, status="200", method="get": op(spec, path, method)["responses"][status].get("content")  # noqa: E731
    assert content("/") == {"text/plain": {"schema": {"title": "Response object", "type": "string"}}}
    when = content("/datetime")
    assert when["application/json"]["schema"]["format"] == "date-time" and "text/plain" in when  # Robyn's + what is sent
    assert content("/literal")["application/json"]["schema"]["enum"] == ["a", "b"]
    assert content("/bytes") == {"application/octet-stream": {"schema": {"title": "Response object", "type": "string",
                                                                         "format": "binary"}}}
    assert content("/nothing") is None
    assert content("/gone", "204", "delete") is None
    assert content("/stream") == {"*/*": {"schema": {}}}
    assert content("/secret") == {"*/*": {"schema": {}}}
    assert len(content("/union")["application/json"]["schema"]["anyOf"]) == 2


def test_deprecated_hidden_and_connect_routes(spec):
    assert op(spec, "/deprecated")["deprecated"] is True
    assert "deprecated" not in op(spec, "/")
    assert "/hidden" not in spec["paths"]
    assert "/tunnel" not in spec["paths"]  # CONNECT has no Path Item field


def test_auth_required_routes_carry_security_and_401(spec):
    assert spec["components"]["securitySchemes"] == {"BearerAuth": {"type": "http", "scheme": "bearer"}}
    secret = op(spec, "/secret")
    assert secret["security"] == [{"BearerAuth": []}]
    assert secret["responses"]["401"] == {"description": "Unauthorized"}
    assert "security" not in op(spec, "/")


def test_the_served_routes_are_not_in_the_spec_and_skip_default_headers(server, spec):
    assert not any(path == "/openapi.json" or path.startswith("/docs") for path in spec["paths"])
    for path in ("/openapi.json", "/docs", "/docs/static/swagger-ui.css"):
        response = httpx.get(server.url + path)
        assert response.status_code == 200 and "x-app" not in response.headers, path
    assert httpx.get(server.url + "/").headers["x-app"] == "1"
    # They are ordinary routes otherwise: global middlewares ran on them, auth_required did not.
    assert {"/openapi.json", "/docs"} <= set(httpx.get(server.url + "/calls").json())


def test_the_spec_is_made_once_and_served_from_memory(tmp_path):
    app = Robyn(str(tmp_path / "app.py"))

    @app.get("/a")
    def a() -> str:
        return "a"

    with TestClient(app) as client:
        first = client.get("/openapi.json").content
        route = next(r for r in app.dispatcher.routes if r.endpoint == "/openapi.json")
        assert route.const and route.cached is not None
        assert client.get("/openapi.json").content == first
    assert "/a" in json.loads(first)["paths"]


def test_openapi_info_servers_and_security_schemes_are_written(tmp_path):
    openapi = OpenAPI(info=OpenAPIInfo(
        title="Shop", version="2.1", description="A shop", termsOfService="https://example.com/terms",
        contact=Contact(name="Ops", email="ops@example.com"), license=License(name="MIT"),
        servers=[Server(url="http://127.0.0.1:9999", description="local")],
        externalDocs=ExternalDocumentation(description="Guide", url="https://example.com/guide"),
        components=Components(schemas={"Thing": {"type": "object"}})))
    openapi.add_security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "x-key"})
    oauth = {"type": "oauth2", "flows": {"password": {"tokenUrl": "https://auth.example.com/token", "scopes": {}}}}
    openapi.add_security_scheme("OAuth", oauth)
    app = Robyn(str(tmp_path / "app.py"), openapi=openapi)
    assert app.openapi is openapi and openapi.openapi_spec["info"]["title"] == "Shop"

    @app.get("/locked", auth_required=True)
    def locked() -> str:
        return "x"

    class Handler:
        token_getter = type("Custom", (), {"scheme": "Custom"})()

        def authenticate(self, request):
            return None

    app.configure_authentication(Handler())  # type: ignore[arg-type]
    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    validate(spec)
    assert spec["info"] == {"title": "Shop", "version": "2.1", "description": "A shop",
                            "termsOfService": "https://example.com/terms",
                            "contact": {"name": "Ops", "email": "ops@example.com"}, "license": {"name": "MIT"}}
    assert spec["servers"] == [{"url": "http://127.0.0.1:9999", "description": "local"}]
    assert spec["externalDocs"] == {"description": "Guide", "url": "https://example.com/guide"}
    assert spec["components"]["schemas"] == {"Thing": {"type": "object"}}
    # A non-Bearer handler adds no ApiKeyAuth when the app declared a scheme (Robyn's rule).
    assert spec["components"]["securitySchemes"] == {"ApiKey": {"type": "apiKey", "in": "header", "name": "x-key"},
                                                     "OAuth": oauth}
    assert spec["paths"]["/locked"]["get"]["security"] == [{"ApiKey": []}, {"OAuth": []}]
    # "Try it out" may reach the spec's own servers and token endpoint, nothing else.
    csp = client.get("/docs").headers.get("content-security-policy")
    assert "connect-src 'self' http://127.0.0.1:9999 https://auth.example.com;" in csp
    assert client.get("/docs").text.count("<title>Shop - API docs</title>") == 1


def test_a_non_bearer_handler_alone_gives_an_api_key_scheme(tmp_path):
    app = Robyn(str(tmp_path / "app.py"))

    @app.get("/locked", auth_required=True)
    def locked() -> str:
        return "x"

    class Handler:
        token_getter = type("Custom", (), {"scheme": "Token"})()

        def authenticate(self, request):
            return None

    app.configure_authentication(Handler())  # type: ignore[arg-type]
    spec = TestClient(app).get("/openapi.json").json()
    assert spec["components"]["securitySchemes"] == {
        "ApiKeyAuth": {"type": "apiKey", "in": "header", "name": "Authorization"}}
    assert spec["paths"]["/locked"]["get"]["security"] == [{"ApiKeyAuth": []}]


def test_an_openapi_json_beside_the_app_is_served_byte_for_byte(serve, tmp_path):
    custom = b'{"openapi": "3.1.0",  "info": {"title": "Custom", "version": "9"}, "paths": {}}\n'
    (tmp_path / "openapi.json").write_bytes(custom)
    server = serve("from stonechat import Robyn\napp = Robyn(__file__)\n"
                   "@app.get('/x')\ndef x():\n    return 'x'\n"
                   "assert app.openapi.openapi_spec['info']['title'] == 'Custom'\n"
                   "app.start()\n")
    response = httpx.get(server.url + "/openapi.json")
    assert response.status_code == 200 and response.content == custom
    assert response.headers["content-type"] == "application/json"
    assert httpx.get(server.url + "/docs").status_code == 200


def test_openapi_file_path_is_relative_to_the_app_and_checked_at_once(tmp_path):
    (tmp_path / "specs").mkdir()
    (tmp_path / "specs" / "api.json").write_text('{"openapi": "3.1.0", "info": {"title": "Named", "version": "1"}}')
    app = Robyn(str(tmp_path / "app.py"), openapi_file_path="specs/api.json")
    assert app.openapi.openapi_file_override and app.openapi.openapi_spec["info"]["title"] == "Named"
    assert TestClient(app).get("/openapi.json").json()["info"]["title"] == "Named"
    with pytest.raises(FileNotFoundError, match="openapi_file_path: cannot read"):
        Robyn(str(tmp_path / "app.py"), openapi_file_path="missing.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="openapi_file_path: .*broken.json.* is not valid JSON"):
        Robyn(str(tmp_path / "app.py"), openapi_file_path="broken.json")


def test_an_app_made_without_a_file_does_not_pick_up_the_working_directorys_json(tmp_path, monkeypatch):
    (tmp_path / "openapi.json").write_text('{"openapi": "3.1.0", "info": {"title": "Stray", "version": "1"}}')
    monkeypatch.chdir(tmp_path)
    app = Robyn()
    assert not app.openapi.openapi_file_override
    assert TestClient(app).get("/openapi.json").json()["info"]["title"] == "Robyn API"


def test_disable_openapi_flag_turns_both_routes_off(serve):
    server = serve("from stonechat import Robyn\napp = Robyn(__file__)\n"
                   "@app.get('/x')\ndef x():\n    return 'x'\napp.start()\n", args=["--disable-openapi"])
    assert httpx.get(server.url + "/x").text == "x"
    assert httpx.get(server.url + "/openapi.json").status_code == 404
    assert httpx.get(server.url + "/docs").status_code == 404
    assert httpx.get(server.url + "/docs/static/swagger-ui-bundle.js").status_code == 404


def test_config_disable_openapi_turns_both_routes_off(tmp_path):
    app = Robyn(str(tmp_path / "app.py"), config=Config(["--disable-openapi"]))
    client = TestClient(app)
    assert client.get("/openapi.json").status_code == 404 and client.get("/docs").status_code == 404
    enabled = Robyn(str(tmp_path / "app.py"), config=Config([]))
    assert TestClient(enabled).get("/openapi.json").status_code == 200


def test_an_apps_own_docs_route_wins(tmp_path, caplog):
    app = Robyn(str(tmp_path / "app.py"))

    @app.get("/docs")
    def docs() -> str:
        return "my docs"

    client = TestClient(app)
    assert client.get("/docs").text == "my docs"
    assert "/docs" in client.get("/openapi.json").json()["paths"]  # an ordinary route of the app
    assert "GET /docs is the app's own route" in caplog.text


def test_a_route_that_cannot_be_documented_is_left_out_with_a_warning(tmp_path, caplog):
    from pydantic import BaseModel, ConfigDict

    class Opaque:
        pass

    class Holder(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)
        thing: Opaque  # Pydantic has no JSON Schema for it

    app = Robyn(str(tmp_path / "app.py"))

    @app.get("/opaque", response_model=Holder)
    def opaque():
        return "x"

    @app.get("/fine")
    def fine() -> str:
        return "fine"

    client = TestClient(app)
    spec = client.get("/openapi.json").json()
    assert "/fine" in spec["paths"] and "/opaque" not in spec["paths"]
    assert "GET /opaque (" in caplog.text and "is left out of the spec" in caplog.text
    assert client.get("/fine").text == "fine"


def test_robyns_import_paths():
    import stonechat
    from stonechat import openapi as robyn_path
    assert stonechat.OpenAPI is robyn_path.OpenAPI
    assert robyn_path.RouteOpenAPIMeta(status_code=201).status_code == 201


def test_the_demo_apps_spec_is_valid():
    result = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import json, sys
        sys.path.insert(0, "examples")
        from demo import app
        from stonechat.testing import TestClient
        print(json.dumps(TestClient(app).get("/openapi.json").json()))
    """)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    spec = json.loads(result.stdout)
    validate(spec)
    assert {"/", "/json", "/user/{id}", "/greet", "/health"} <= set(spec["paths"])


def test_schemathesis_finds_nothing_against_the_demo_app(serve, tmp_path):
    """Every check schemathesis has, on a fixed seed and a small example count: no 5xx, no
    status, media type, header or body the spec does not allow, valid data accepted, invalid
    data refused."""
    server = serve(str(ROOT / "examples" / "demo.py"))
    result = subprocess.run(
        [sys.executable, "-m", "schemathesis.cli", "run", server.url + "/openapi.json", "--checks", "all",
         "--max-examples", "25", "--seed", "20261201", "--workers", "1", "--generation-database", "none",
         "--no-color", "--request-timeout", "10", "--report", "junit", "--report-dir", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "No issues found" in out, out[-6000:]
    assert "12 selected / 12 total" in out  # every documented operation was exercised
