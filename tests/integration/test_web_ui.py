"""The web UI in a real browser: Debian's chromium driven by playwright (no browser download).

Run with `-s` to see where the model page screenshot is saved.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.apikeys import ApiKeyFile, split_key
from api.settings import Settings
from tests.conftest import HOST
from tests.ollama_layout import write_model
from tests.registries import big_bytes
from tests.servers import ThreadedServer, free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)"),
]

HOSTILE_TEMPLATE = '<script>alert("template")</script>{{ .Prompt }}'
HOSTILE_SYSTEM = '"><img src=x onerror=alert("system")>'
HOSTILE_LICENSE = '<a href="javascript:alert(\'license\')">click me</a> <script>alert("license")</script>'


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


@pytest.fixture
def source(tmp_path: Path) -> Iterator[ThreadedServer]:
    """Another corral whose registry serves a 3 MB model to pull."""
    port = free_port()
    root = tmp_path / "source"
    write_model(root, (f"127.0.0.1:{port}", "alice", "big", "latest"), big_bytes(3 << 20, seed=3))
    with ThreadedServer(Settings(models=root, host="127.0.0.1", port=port)) as srv:
        yield srv


@pytest.fixture
def ui(ollama_store: Path, tiny_f16: bytes, tmp_path: Path, monkeypatch) -> Iterator[ThreadedServer]:
    monkeypatch.setenv("CORRAL_KEY", str(tmp_path / "key" / "id_ed25519"))
    write_model(ollama_store, (HOST, "evil", "x", "latest"), tiny_f16, template=HOSTILE_TEMPLATE,
                system=HOSTILE_SYSTEM, licenses=[HOSTILE_LICENSE],
                params={"stop": ['</pre><script>alert("param")</script>']},
                family='<img src=x onerror=alert("family")>', model_type='"><script>alert(1)</script>')
    keys = ApiKeyFile(tmp_path / "keys.json")
    _, admin = keys.create("admin", ("*",), ("pull", "push", "infer", "manage"))
    settings = Settings(models=ollama_store, host="127.0.0.1", port=free_port(), require_auth=True,
                        api_keys=keys.path)
    with ThreadedServer(settings) as srv:
        srv.admin_key = admin  # type: ignore[attr-defined]
        yield srv


class Watch:
    """Fails the test if any script runs: dialogs, page errors, console errors."""

    def __init__(self, page) -> None:
        self.events: list[str] = []
        page.on("dialog", lambda d: (self.events.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("pageerror", lambda e: self.events.append(f"pageerror: {e}"))
        # Any console error counts (a CSP refusal shows up there), except HTTP error
        # statuses of loads, which the tests provoke on purpose (a refused login is 401).
        page.on("console", lambda m: self.events.append(f"console {m.type}: {m.text}")
                if m.type == "error" and not m.text.startswith("Failed to load resource") else None)


def login(page, ui) -> None:
    page.goto(ui.url + "/ui/")
    assert page.url.endswith("/ui/login")
    page.fill("input[name=key]", "corral_000000000000_" + "x" * 43)
    page.click("#login-form button")
    assert "not valid" in page.inner_text("#login-error")
    page.fill("input[name=key]", ui.admin_key)
    page.click("#login-form button")
    page.wait_for_url(ui.url + "/ui/")


def test_browse_search_open_pull_delete(browser, ui, source, tmp_path):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    watch = Watch(page)
    login(page, ui)
    cookie = next(c for c in context.cookies() if c["name"] == "corral_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    names = page.locator("a.model-link").all_inner_texts()
    assert {"tiny:latest", "alice/mario:v1", "evil/x:latest"} <= set(names)
    page.fill("input[name=q]", "mario")
    page.click("#search button")
    assert page.locator("a.model-link").all_inner_texts() == ["alice/mario:v1"]

    page.goto(ui.url + "/ui/")
    page.click("a.model-link:text-is('tiny:latest')")
    page.wait_for_selector("#modelfile")
    assert page.inner_text("#model-name") == "tiny:latest"
    modelfile = page.inner_text("#modelfile")
    assert "FROM " in modelfile and "TEMPLATE" in modelfile and "You are a tiny test model." in modelfile
    layers = page.inner_text("#layers")
    assert "application/vnd.ollama.image.model" in layers and "application/vnd.ollama.image.template" in layers
    assert "llama" in page.inner_text("#gguf")
    assert "ollama pull tiny:latest" in page.content()
    shot = tmp_path / "model-page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    print(f"\nmodel page screenshot: {shot}")

    # Pull from the other corral, watching the bar reach 100%.
    host = source.url.removeprefix("http://")
    page.goto(ui.url + "/ui/pull")
    page.fill("#pull-form input[name=model]", f"{host}/alice/big:latest")
    page.check("#pull-form input[name=insecure]")
    page.click("#pull-form button")
    expect(page.locator("#pull-status")).to_have_text("success", timeout=60_000)
    assert page.inner_text("#pull-percent") == "100%"
    assert page.eval_on_selector("#pull-progress", "e => e.value") == 100
    headers = {"Authorization": f"Bearer {ui.admin_key}"}
    tags = {m["name"] for m in httpx.get(ui.url + "/api/tags", headers=headers).json()["models"]}
    assert f"{host}/alice/big:latest" in tags

    # Copy it, then delete the copy and the original from their pages.
    page.goto(f"{ui.url}/ui/model/{host}/alice/big:latest")
    page.fill("form[data-action=copy] input[name=destination]", "team/big-copy")
    page.click("form[data-action=copy] button")
    page.wait_for_url(f"{ui.url}/ui/model/team/big-copy")
    assert page.inner_text("#model-name") == "team/big-copy:latest"
    page.click("#delete")
    page.wait_for_url(ui.url + "/ui/")
    page.goto(f"{ui.url}/ui/model/{host}/alice/big:latest")
    page.click("#delete")
    page.wait_for_url(ui.url + "/ui/")
    tags = {m["name"] for m in httpx.get(ui.url + "/api/tags", headers=headers).json()["models"]}
    assert f"{host}/alice/big:latest" not in tags
    assert watch.events == []
    context.close()


def test_hostile_model_renders_inert(browser, ui):
    context = browser.new_context()
    page = context.new_page()
    watch = Watch(page)
    login(page, ui)
    page.goto(ui.url + "/ui/model/evil/x:latest")
    response = page.goto(ui.url + "/ui/model/evil/x:latest")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert page.inner_text("#template") == HOSTILE_TEMPLATE
    assert page.inner_text("#system") == HOSTILE_SYSTEM
    assert page.inner_text("#license") == HOSTILE_LICENSE
    assert page.locator("main script, main img, #license a").count() == 0
    assert page.locator("script").count() == 1  # only /ui/static/app.js
    page.goto(ui.url + "/ui/?q=" + "%3Cscript%3Ealert(%22q%22)%3C/script%3E")
    assert page.input_value("input[name=q]") == '<script>alert("q")</script>'
    page.goto(ui.url + "/ui/")  # the list shows the hostile family/parameter strings too
    assert '"><script>alert(1)</script>' in page.inner_text("table.models")
    assert watch.events == []
    context.close()


def test_cross_site_posts_are_refused(browser, ui):
    context = browser.new_context()
    page = context.new_page()
    login(page, ui)
    # An attacker page on another port of the same host: same *site*, so the SameSite
    # cookie is sent; the missing CSRF token and the foreign Origin must stop it.
    evil = f"http://127.0.0.1:{free_port()}/"
    form = ('<form id=f method=post enctype="text/plain" action="{url}">'
            '<input name=\'{{"model":"tiny","x":"\' value=\'"}}\'></form>'
            '<script>document.getElementById("f").submit()</script>')
    def serve(body: str):
        return lambda route: route.fulfill(status=200, content_type="text/html", body=body)

    for action in ("/ui/api/delete", "/ui/login"):
        page.route(evil, serve(form.format(url=ui.url + action)))
        with page.expect_response(lambda r, a=action: r.url.endswith(a)) as info:
            page.goto(evil)
        assert info.value.status == 403
        page.unroute(evil)
    headers = {"Authorization": f"Bearer {ui.admin_key}"}
    tags = {m["name"] for m in httpx.get(ui.url + "/api/tags", headers=headers).json()["models"]}
    assert "tiny:latest" in tags
    # A same-origin fetch without the token is refused as well.
    page.goto(ui.url + "/ui/")
    status = page.evaluate("""() => fetch('/ui/api/delete', {method: 'POST', headers: {'Content-Type':
        'application/json'}, body: JSON.stringify({model: 'tiny'})}).then(r => r.status)""")
    assert status == 403
    context.close()


def test_root_sends_browsers_to_the_ui(ui):
    r = httpx.get(ui.url + "/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 302 and r.headers["location"] == "/ui/"
    assert httpx.get(ui.url + "/").text == "Ollama is running"
    assert os.environ.get("CORRAL_DEFAULT_MODEL") == "0"


def test_chat_playground_and_keys_view(browser, ui):
    from playwright.sync_api import expect

    context = browser.new_context()
    page = context.new_page()
    watch = Watch(page)
    login(page, ui)
    page.goto(ui.url + "/ui/running")
    page.select_option("#chat-form select[name=model]", "tiny:latest")
    page.fill("#chat-form textarea[name=prompt]", "<b>hello</b>")
    page.click("#chat-form button")
    expect(page.locator("#chat-log .user")).to_have_text("> <b>hello</b>")
    expect(page.locator("#chat-log .assistant")).not_to_be_empty(timeout=60_000)
    assert page.locator("#chat-log b").count() == 0
    page.goto(ui.url + "/ui/running")
    assert "tiny:latest" in page.inner_text("#running")  # loaded by the chat
    page.goto(ui.url + "/ui/keys")
    keys = page.inner_text("#api-keys")
    assert "admin" in keys and "pull, push, infer, manage" in keys
    assert split_key(ui.admin_key)[1] not in page.content()
    assert watch.events == []
    context.close()
