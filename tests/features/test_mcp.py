"""``app.mcp`` (features/mcp.py): the JSON-RPC MCP endpoint at ``POST /mcp``, driven by the
official ``mcp`` Python client over its Streamable HTTP transport against the real server,
and by raw JSON-RPC (httpx) for every kind of bad input."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError as ClientMCPError

from stonechat import Robyn, TestClient
from stonechat.features.mcp import PROTOCOL_VERSIONS

APP = '''
from typing import Literal, Optional
from stonechat import Robyn

app = Robyn(__file__)
app.mcp.handler.server_info = {"name": "notes", "version": "2.0"}

@app.mcp.resource("echo://{message}")
def echo_resource(message: str) -> str:
    return f"Resource echo: {message}"

@app.mcp.resource("user://{user_id}/posts/{post_id}")
def get_user_post(user_id: int, post_id: str) -> str:
    return f"Post {post_id} from user {user_id + 1}"

@app.mcp.resource("file://{path}")
def read_file(path: str) -> str:
    return "file " + path

@app.mcp.resource("config://app", description="The app's settings", mime_type="application/json")
async def config() -> dict:
    return {"debug": False}

@app.mcp.resource("blob://logo", mime_type="image/png")
def logo() -> bytes:
    return b"\\x89PNG"

@app.mcp.resource("broken://it")
def broken() -> str:
    raise RuntimeError("disk on fire")

@app.mcp.tool()
def add(a: int, b: int = 2) -> int:
    """Add two integers."""
    return a + b

@app.mcp.tool()
async def greet(name: str, formal: bool = False, style: Literal["short", "long"] = "short",
                tags: Optional[list[str]] = None) -> str:
    return (f"Good day, {name}." if formal else f"Hi {name}!") + (" " + ",".join(tags) if tags else "")

@app.mcp.tool()
def divide(a: float, b: float) -> str:
    if b == 0:
        raise ValueError("Division by zero")
    return str(a / b)

@app.mcp.tool()
def stats(values: list[int]) -> dict:
    return {"n": len(values), "sum": sum(values)}

# Robyn's own examples/mcp.py style: an explicit schema and one ``args`` dict
@app.mcp.tool(name="echo", description="Echo back text",
              input_schema={"type": "object", "properties": {"text": {"type": "string"}},
                            "required": ["text"]})
def echo_tool(args):
    return args.get("text", "")

@app.mcp.prompt()
def code_review(code: str, language: str = "python") -> str:
    """Review some code."""
    return f"Please review this {language} code: {code}"

@app.mcp.prompt(name="explain", description="Explain code",
                arguments=[{"name": "code", "description": "Code", "required": True}])
def explain(args):
    return [f"Explain: {args['code']}", {"role": "assistant", "content": {"type": "text", "text": "Sure."}}]

@app.mcp.prompt()
def repeat(word: str, times: int) -> str:
    return " ".join([word] * times)

@app.get("/")
def index():
    return "home"

if __name__ == "__main__":
    app.start()
'''


@pytest.fixture(scope="module")
def server(serve_module):
    return serve_module(APP)


@pytest.fixture
def rpc(server):
    with httpx.Client(base_url=server.url, timeout=10) as http:
        def call(body, headers=None, raw=None):
            if raw is not None:
                r = http.post("/mcp", content=raw, headers=headers or {"content-type": "application/json"})
            else:
                r = http.post("/mcp", json=body, headers=headers)
            assert r.status_code < 500, r.text
            return r
        yield call


def run(coro):
    return asyncio.run(coro)


# -- the official client ----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["auto", "legacy"])
def test_the_official_client_connects_lists_and_calls(server, mode):
    async def session():
        async with Client(f"{server.url}/mcp", mode=mode) as client:
            init = client.session.initialize_result
            assert init is not None  # "auto" probed server/discover, then fell back to initialize
            assert init.protocol_version == "2025-11-25"
            assert init.server_info.name == "notes" and init.server_info.version == "2.0"

            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == {"add", "greet", "divide", "stats", "echo"}
            assert tools["add"].description == "Add two integers."
            assert tools["add"].input_schema == {
                "type": "object", "required": ["a"],
                "properties": {"a": {"type": "integer"}, "b": {"type": "integer", "default": 2}}}
            greet = tools["greet"].input_schema["properties"]
            assert greet["formal"] == {"type": "boolean", "default": False}
            assert greet["style"] == {"enum": ["short", "long"], "default": "short"}
            assert greet["tags"] == {"anyOf": [{"type": "array", "items": {"type": "string"}}, {"type": "null"}]}

            result = await client.call_tool("add", {"a": 3})
            assert not result.is_error and result.content[0].text == "5"
            result = await client.call_tool("greet", {"name": "Ann", "formal": True})
            assert result.content[0].text == "Good day, Ann."
            result = await client.call_tool("greet", {"name": "Bo", "tags": ["x", "y"]})
            assert result.content[0].text == "Hi Bo! x,y"
            result = await client.call_tool("stats", {"values": [1, 2, 3]})
            assert result.content[0].text == '{"n":3,"sum":6}'
            result = await client.call_tool("echo", {"text": "yo"})
            assert result.content[0].text == "yo"
            # a tool that raises: a result the model can read, not a protocol error
            result = await client.call_tool("divide", {"a": 1, "b": 0})
            assert result.is_error and result.content[0].text == "ValueError: Division by zero"

            resources = (await client.list_resources()).resources
            assert [(r.uri, r.mime_type) for r in resources] == [
                ("config://app", "application/json"), ("blob://logo", "image/png"), ("broken://it", "text/plain")]
            assert resources[0].description == "The app's settings"
            templates = (await client.list_resource_templates()).resource_templates
            assert [t.uri_template for t in templates] == [
                "echo://{message}", "user://{user_id}/posts/{post_id}", "file://{path}"]

            contents = (await client.read_resource("echo://hello%20there")).contents
            assert contents[0].text == "Resource echo: hello there" and contents[0].mime_type == "text/plain"
            contents = (await client.read_resource("user://41/posts/p1")).contents
            assert contents[0].text == "Post p1 from user 42"
            contents = (await client.read_resource("file://docs/a/b.txt")).contents
            assert contents[0].text == "file docs/a/b.txt"
            contents = (await client.read_resource("config://app")).contents
            assert contents[0].text == '{"debug":false}' and contents[0].mime_type == "application/json"
            contents = (await client.read_resource("blob://logo")).contents
            assert contents[0].blob == "iVBORw=="  # base64 of the bytes

            prompts = {p.name: p for p in (await client.list_prompts()).prompts}
            assert [(a.name, a.required) for a in prompts["code_review"].arguments] == [
                ("code", True), ("language", False)]
            got = await client.get_prompt("code_review", {"code": "x = 1"})
            assert got.description == "Review some code."
            assert got.messages[0].role == "user"
            assert got.messages[0].content.text == "Please review this python code: x = 1"
            got = await client.get_prompt("explain", {"code": "y"})
            assert [(m.role, m.content.text) for m in got.messages] == [("user", "Explain: y"), ("assistant", "Sure.")]
            got = await client.get_prompt("repeat", {"word": "la", "times": "3"})  # strings, converted
            assert got.messages[0].content.text == "la la la"

            # protocol errors reach the client as MCP errors with their codes
            with pytest.raises(ClientMCPError) as err:
                await client.call_tool("add", {"a": "x"})
            assert err.value.error.code == -32602 and "'a' must be int" in err.value.error.message
            with pytest.raises(ClientMCPError) as err:
                await client.read_resource("nope://x")
            assert err.value.error.code == -32002
            with pytest.raises(ClientMCPError) as err:
                await client.get_prompt("repeat", {"word": "la", "times": "many"})
            assert err.value.error.code == -32602
    run(session())


# -- raw JSON-RPC: the handshake, batches, notifications ----------------------------------------------

def test_initialize_answers_the_clients_version_when_spoken_here_else_the_newest(rpc):
    for version in PROTOCOL_VERSIONS:
        r = rpc({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                 "params": {"protocolVersion": version, "capabilities": {},
                            "clientInfo": {"name": "t", "version": "1"}}})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        result = r.json()["result"]
        assert result["protocolVersion"] == version
        assert set(result["capabilities"]) == {"resources", "tools", "prompts"}
    r = rpc({"jsonrpc": "2.0", "id": 2, "method": "initialize", "params": {"protocolVersion": "1999-01-01"}})
    assert r.json()["result"]["protocolVersion"] == "2025-11-25"


def test_notifications_get_202_with_no_body_and_responses_from_the_client_too(rpc):
    r = rpc({"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert r.status_code == 202 and r.content == b""
    r = rpc({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1}}})
    assert r.status_code == 202 and r.content == b""  # a notification is never answered
    r = rpc({"jsonrpc": "2.0", "id": 9, "result": {}})
    assert r.status_code == 202


def test_a_batch_is_answered_in_order_without_its_notifications(rpc):
    r = rpc([{"jsonrpc": "2.0", "id": "a", "method": "ping"},
             {"jsonrpc": "2.0", "method": "notifications/initialized"},
             5,
             {"jsonrpc": "2.0", "id": "b", "method": "tools/call", "params": {"name": "add", "arguments": {"a": 40}}}])
    answers = r.json()
    assert [a["id"] for a in answers] == ["a", None, "b"]
    assert answers[0]["result"] == {} and answers[1]["error"]["code"] == -32600
    assert answers[2]["result"]["content"][0]["text"] == "42"
    r = rpc([{"jsonrpc": "2.0", "method": "notifications/initialized"}])
    assert r.status_code == 202


def test_get_on_the_endpoint_is_405_there_is_no_server_stream(server):
    r = httpx.get(f"{server.url}/mcp")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


def test_an_unsupported_protocol_version_header_is_400_naming_the_versions(rpc):
    r = rpc({"jsonrpc": "2.0", "id": 7, "method": "server/discover", "params": {}},
            headers={"mcp-protocol-version": "2026-07-28"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert r.json()["id"] == 7 and error["code"] == -32022
    assert error["data"] == {"supported": list(PROTOCOL_VERSIONS), "requested": "2026-07-28"}
    r = rpc({"jsonrpc": "2.0", "id": 8, "method": "ping"}, headers={"mcp-protocol-version": "2025-06-18"})
    assert r.status_code == 200 and r.json() == {"jsonrpc": "2.0", "id": 8, "result": {}}


# -- raw JSON-RPC: every kind of bad input is a JSON-RPC error, never a 500 ------------------------------

@pytest.mark.parametrize("raw", [b"{bad", b"", b"\xff\xfe", b'{"jsonrpc": "2.0", "id": 1,', b"nan"])
def test_a_body_that_is_not_json_is_a_parse_error(rpc, raw):
    r = rpc(None, raw=raw)
    assert r.status_code == 200
    body = r.json()
    assert body["id"] is None and body["error"]["code"] == -32700 and body["error"]["message"] == "Parse error"


@pytest.mark.parametrize("message, why", [
    ([], "empty batch"),
    ("ping", "is an object"),
    (42, "is an object"),
    ({"id": 1, "method": "ping"}, '"jsonrpc" must be "2.0"'),
    ({"jsonrpc": "1.0", "id": 1, "method": "ping"}, '"jsonrpc" must be "2.0"'),
    ({"jsonrpc": "2.0", "id": 1}, "method must be a string"),
    ({"jsonrpc": "2.0", "id": 1, "method": 5}, "method must be a string"),
    ({"jsonrpc": "2.0", "id": True, "method": "ping"}, "id must be"),
    ({"jsonrpc": "2.0", "id": {"x": 1}, "method": "ping"}, "id must be"),
    ({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}, "id must be"),
])
def test_a_message_that_is_not_a_request_is_invalid_request(rpc, message, why):
    body = rpc(message).json()
    assert body["error"]["code"] == -32600 and why in body["error"]["message"], body


def test_an_unknown_method_is_method_not_found(rpc):
    for method in ("tools/delete", "server/discover", "resources/subscribe", ""):
        body = rpc({"jsonrpc": "2.0", "id": "m", "method": method, "params": {}}).json()
        assert body["id"] == "m" and body["error"]["code"] == -32601
        assert body["error"]["message"] == f"Method not found: {method}"


@pytest.mark.parametrize("method, params, says", [
    ("tools/call", [1, 2], "params must be an object"),
    ("tools/call", {}, "needs a tool name"),
    ("tools/call", {"name": "nope"}, "Tool not found: nope"),  # Robyn's words
    ("tools/call", {"name": 3}, "Tool not found: 3"),
    ("tools/call", {"name": "add", "arguments": [1]}, "arguments must be an object"),
    ("tools/call", {"name": "add", "arguments": {}}, "missing required argument(s) 'a'"),
    ("tools/call", {"name": "add", "arguments": {"a": 1, "c": 2}}, "unknown argument(s) 'c' (it takes a, b)"),
    ("tools/call", {"name": "add", "arguments": {"a": True}}, "'a' must be int, got boolean true"),
    ("tools/call", {"name": "add", "arguments": {"a": 1.5}}, "'a' must be int, got number 1.5"),
    ("tools/call", {"name": "greet", "arguments": {"name": "x", "style": "medium"}}, "'style' must be one of"),
    ("tools/call", {"name": "greet", "arguments": {"name": "x", "tags": [1]}}, "'tags' must be"),
    ("tools/call", {"name": "stats", "arguments": {"values": "1,2"}}, "'values' must be an array"),
    ("tools/call", {"name": "echo", "arguments": {}}, "missing required argument(s) 'text'"),
    ("tools/call", {"name": "echo", "arguments": {"text": 5}}, "'text' must be string, got integer 5"),
    ("resources/read", {}, "URI is required"),
    ("resources/read", {"uri": 5}, "URI is required"),
    ("resources/read", {"uri": "user://abc/posts/1"}, "'user_id' must be int, got 'abc'"),
    ("prompts/get", {"name": "nope"}, "Prompt not found: nope"),
    ("prompts/get", {"name": "code_review", "arguments": {}}, "missing required argument(s) 'code'"),
    ("prompts/get", {"name": "explain", "arguments": {}}, "missing required argument(s) 'code'"),
    ("prompts/get", {"name": "code_review", "arguments": "x"}, "arguments must be an object"),
])
def test_bad_params_are_invalid_params_saying_what_is_wrong(rpc, method, params, says):
    body = rpc({"jsonrpc": "2.0", "id": 3, "method": method, "params": params}).json()
    assert body["id"] == 3 and body["error"]["code"] == -32602, body
    assert says in body["error"]["message"], body


def test_resource_errors_have_their_own_codes(rpc):
    body = rpc({"jsonrpc": "2.0", "id": 1, "method": "resources/read", "params": {"uri": "echo://a/b"}}).json()
    assert body["error"]["code"] == -32002 and body["error"]["data"] == {"uri": "echo://a/b"}  # one segment only
    body = rpc({"jsonrpc": "2.0", "id": 2, "method": "resources/read", "params": {"uri": "broken://it"}}).json()
    assert body["error"] == {"code": -32603, "message": "Internal error", "data": "RuntimeError: disk on fire"}


def test_browser_pages_may_call_only_from_loopback_or_allowed_origins(rpc):
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    for origin in ("http://localhost:6274", "http://127.0.0.1:3000", "http://[::1]", "http://app.localhost"):
        assert rpc(ping, headers={"origin": origin}).status_code == 200, origin
    r = rpc(ping, headers={"origin": "http://evil.example:8080"})  # e.g. a DNS-rebinding page
    assert r.status_code == 403 and r.json()["error"]["code"] == -32600
    assert "Origin not allowed: http://evil.example:8080" in r.json()["error"]["message"]
    app = Robyn(__file__)
    app.mcp.allowed_origins.append("https://app.example")
    client = TestClient(app)
    assert client.post("/mcp", json_data=ping, headers={"origin": "https://app.example"}).status_code == 200
    assert client.post("/mcp", json_data=ping, headers={"origin": "https://other.example"}).status_code == 403


def test_the_rest_of_the_app_is_untouched(server):
    assert httpx.get(f"{server.url}/").text == "home"


# -- in-process, registration ---------------------------------------------------------------------------

def test_app_mcp_is_made_once_and_answers_through_the_test_client():
    app = Robyn(__file__)
    assert app.mcp is app.mcp

    @app.mcp.tool()
    def shout(text: str) -> str:
        return text.upper()

    client = TestClient(app)
    r = client.post("/mcp", json_data={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                       "params": {"name": "shout", "arguments": {"text": "hi"}}})
    assert r.json()["result"] == {"content": [{"type": "text", "text": "HI"}], "isError": False}
    answer = asyncio.run(app.mcp.handler.handle_request({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
    assert answer["result"]["tools"][0]["name"] == "shout"  # Robyn's MCPHandler.handle_request


def test_a_template_variable_without_a_parameter_fails_at_registration():
    app = Robyn(__file__)
    with pytest.raises(ValueError, match=r"'user://\{id\}'.*no parameter for 'id'"):
        @app.mcp.resource("user://{id}")
        def user(name: str) -> str:
            return name


def test_robyns_module_path_re_exports_the_mcp_classes():
    import stonechat.features.mcp as feature
    import stonechat.mcp as robyn_path
    assert robyn_path.MCPApp is feature.MCPApp and robyn_path.MCPHandler is feature.MCPHandler
    assert robyn_path.MCPError is feature.MCPError
