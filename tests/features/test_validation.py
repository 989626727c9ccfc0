"""Pydantic at a route's edges (reference §19): model bodies answer 422 with Robyn's body for bad
JSON, an empty body and failed validation; ``response_model`` validates dict returns; returned
models and lists of models are JSON. Pydantic stays optional: nothing imports it for an app
that uses no model."""

import logging
import subprocess
import sys

import httpx
import pytest
from pydantic import BaseModel

from stonechat import Robyn
from stonechat.features.validation import MultiplePydanticBodyError

APP = r'''
from pydantic import BaseModel, field_validator
from stonechat import Robyn, Request, Response

app = Robyn(__file__)
app.set_response_header("x-app", "1")

class Address(BaseModel):
    street: str
    city: str

class User(BaseModel):
    name: str
    age: int
    active: bool = True

class WithAddress(BaseModel):
    name: str
    address: Address

class Checked(BaseModel):
    code: str

    @field_validator("code")
    @classmethod
    def upper(cls, value):
        if value != value.upper():
            raise ValueError("code must be upper case")
        return value

@app.post("/sync/user")
def sync_user(user: User):
    return user.model_dump()

@app.post("/async/user")
async def async_user(request: Request, user: User):
    return {"method": request.method, **user.model_dump()}

@app.put("/nested")
def nested(data: WithAddress):
    return {"city": data.address.city}

@app.post("/checked")
def checked(data: Checked):
    return data.code

@app.post("/return/model")
def return_model(user: User) -> User:
    return user

@app.post("/return/list")
async def return_list(user: User) -> list[User]:
    return [user, user]

@app.get("/return/empty-list")
def return_empty_list() -> list[User]:
    return []

@app.get("/return/dict-of-models")
def dict_of_models():
    return {"users": [User(name="a", age=1)], "n": 1}

@app.get("/model/status", status_code=201)
def model_status() -> User:
    return User(name="s", age=2)

@app.post("/response-model", response_model=User)
def response_model():
    return {"name": "r", "age": "3", "unknown": "dropped"}

@app.post("/response-model/async", response_model=User, status_code=201)
async def response_model_async():
    return {"name": "r", "age": 4}

@app.get("/response-model/bad", response_model=User)
def response_model_bad():
    return {"name": "no age"}

@app.get("/response-model/passthrough", response_model=User)
def response_model_passthrough():
    return Response(202, {"content-type": "text/plain"}, "as is")

if __name__ == "__main__":
    app.start()
'''

VALID = {"name": "Ada", "age": 36}


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


def _validation_error(response: httpx.Response) -> list[dict]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-app"] == "1"  # an ordinary response: default headers apply
    body = response.json()
    assert body["error"] == "Validation Error" and set(body) == {"detail", "error"}
    return body["detail"]


@pytest.mark.parametrize("path", ["/sync/user", "/async/user"])
def test_a_valid_body_reaches_the_handler_with_defaults_and_coercion(client, path):
    response = client.post(path, json={"name": "Ada", "age": "36", "extra": "ignored"})
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "Ada" and body["age"] == 36 and body["active"] is True and "extra" not in body


@pytest.mark.parametrize("path", ["/sync/user", "/async/user"])
def test_a_missing_field_answers_422_with_robyns_error_body(client, path):
    detail = _validation_error(client.post(path, json={"name": "Ada"}))
    assert len(detail) == 1
    error = detail[0]
    assert error["loc"] == ["age"] and error["type"] == "missing" and "required" in error["msg"].lower()
    assert error["input"] == {"name": "Ada"}
    assert error["url"].startswith("https://errors.pydantic.dev/")  # Robyn keeps Pydantic's url


def test_every_failing_field_is_reported_with_its_input(client):
    detail = _validation_error(client.post("/sync/user", json={"name": 1, "age": "many"}))
    by_loc = {tuple(e["loc"]): e for e in detail}
    assert set(by_loc) == {("name",), ("age",)}
    assert "int" in by_loc[("age",)]["type"] and by_loc[("age",)]["input"] == "many"


def test_nested_models_report_nested_locations(client):
    detail = _validation_error(client.put("/nested", json={"name": "x", "address": {"street": "s"}}))
    assert [e["loc"] for e in detail] == [["address", "city"]]
    assert client.put("/nested", json={"name": "x", "address": {"street": "s", "city": "c"}}).json() == {"city": "c"}


@pytest.mark.parametrize("content", [b"not json at all {{{", b"", b"[1, 2]", b"null", b'{"name": "Ada", "age": 1'])
def test_invalid_empty_or_non_object_json_answers_422_never_500(client, content):
    detail = _validation_error(client.post("/sync/user", content=content,
                                           headers={"content-type": "application/json"}))
    assert detail and all(isinstance(e["msg"], str) for e in detail)


def test_invalid_json_reports_the_body_as_text_and_the_parser_message(client):
    detail = _validation_error(client.post("/sync/user", content=b"{oops"))
    assert detail[0]["type"] == "json_invalid" and detail[0]["loc"] == []
    assert detail[0]["input"] == "{oops"
    assert isinstance(detail[0]["ctx"]["error"], str)


def test_a_body_that_is_not_utf8_is_reported_with_replacement_characters(client):
    detail = _validation_error(client.post("/sync/user", content=b'{"name": "\xff\xfe"}'))
    assert "\ufffd" in detail[0]["input"]


def test_values_json_cannot_hold_in_an_error_still_answer_422(client):
    # An integer beyond 64 bits comes back in "input" (orjson cannot encode it); a lone
    # surrogate is invalid JSON for Pydantic's parser.
    content = b'{"note": "\\ud83d\\ude00", "age": 101025220290653962240}'
    detail = _validation_error(client.post("/sync/user", content=content))
    assert detail[0]["loc"] == ["name"]
    assert detail[0]["input"] == {"note": "\U0001f600", "age": 101025220290653962240}
    detail = _validation_error(client.post("/sync/user", content=b'{"name": "\\ud800", "age": 1}'))
    assert detail[0]["type"] == "json_invalid"


def test_a_validator_error_is_reported_with_its_message(client):
    detail = _validation_error(client.post("/checked", json={"code": "abc"}))
    assert "upper case" in detail[0]["msg"]
    assert isinstance(detail[0]["ctx"]["error"], str)  # the ValueError itself, as text
    assert client.post("/checked", json={"code": "ABC"}).text == "ABC"


def test_a_returned_model_is_json(client):
    response = client.post("/return/model", json=VALID)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"name": "Ada", "age": 36, "active": True}


def test_a_returned_list_of_models_is_a_json_array(client):
    response = client.post("/return/list", json=VALID)
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == [{"name": "Ada", "age": 36, "active": True}] * 2
    assert client.get("/return/empty-list").json() == []


def test_models_inside_a_returned_dict_are_json(client):
    assert client.get("/return/dict-of-models").json() == {"users": [{"name": "a", "age": 1, "active": True}], "n": 1}


def test_a_returned_model_takes_the_routes_status_code(client):
    response = client.get("/model/status")
    assert response.status_code == 201 and response.json()["name"] == "s"


def test_response_model_validates_and_shapes_a_dict_return(client):
    response = client.post("/response-model")
    assert response.status_code == 200
    assert response.json() == {"name": "r", "age": 3, "active": True}  # coerced, unknown key dropped
    response = client.post("/response-model/async")
    assert response.status_code == 201 and response.json() == {"name": "r", "age": 4, "active": True}


def test_a_dict_that_fails_its_response_model_is_a_server_error(client, server):
    response = client.get("/response-model/bad")
    assert response.status_code == 500
    assert "ValidationError" in server.wait_for_output("response_model_bad")


def test_response_model_leaves_a_response_object_alone(client):
    response = client.get("/response-model/passthrough")
    assert response.status_code == 202 and response.text == "as is"


class A(BaseModel):
    x: int


class B(BaseModel):
    y: int


def test_two_model_parameters_are_refused_at_registration(tmp_path):
    app = Robyn(str(tmp_path / "app.py"))
    with pytest.raises(MultiplePydanticBodyError, match=r"multiple Pydantic body parameters \['a', 'b'\]"):
        @app.post("/two")
        def two(a: A, b: B):
            return "never"
    assert isinstance(MultiplePydanticBodyError("h", []), TypeError)  # Robyn's base class
    assert app.route_specs == []


def test_a_model_body_on_get_is_allowed_with_a_warning(tmp_path, caplog):
    app = Robyn(str(tmp_path / "app.py"))
    with caplog.at_level(logging.WARNING, logger="stonechat"):
        @app.get("/read")
        def read(a: A):
            return a
    assert "GET requests typically do not carry a request body" in caplog.text


def test_pydantic_is_not_imported_by_an_app_that_uses_no_model(tmp_path):
    """Building and serving an app (spec included) never loads Pydantic unless the app does."""
    script = tmp_path / "app.py"
    script.write_text(
        "import sys\n"
        "from typing import TypedDict\n"
        "from stonechat import Robyn, JsonBody\n"
        "from stonechat.testing import TestClient\n"
        "app = Robyn(__file__)\n"
        "class Item(JsonBody):\n    name: str\n"
        "@app.post('/item')\ndef item(data: Item) -> dict:\n    return data\n"
        "client = TestClient(app)\n"
        "assert client.post('/item', json_data={'name': 'x'}).json() == {'name': 'x'}\n"
        "assert '/item' in client.get('/openapi.json').json()['paths']\n"
        "print('pydantic' in sys.modules)\n")
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
