"""Pull and push errors that cannot go away fail at once with what to do; registry refusals
read as sentences; a push asks for its rights before it sends a byte; a resumed pull's rate
does not count the bytes already on disk."""

from __future__ import annotations

import asyncio
import datetime
import json
import ssl
import threading
import time
from pathlib import Path

import httpx
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from api.progress import _Layer
from api.settings import Settings
from registry.client import public_line
from registry.client.errors import RegistryError
from tests.conftest import CHATML
from tests.ollama_layout import write_model
from tests.servers import ThreadedServer, free_port


def last_line(resp: httpx.Response) -> dict:
    return json.loads(resp.text.strip().splitlines()[-1])


def test_registry_errors_are_sentences() -> None:
    body = json.dumps({"errors": [{"code": "DENIED", "message": "requested access to the resource is denied",
                                   "detail": {"x": 1}}]})
    err = RegistryError(403, body)
    assert str(err).startswith("403: requested access to the resource is denied (")
    assert "corral key" in str(err) and "{" not in str(err)
    assert str(RegistryError(400, json.dumps({"errors": [{"code": "NAME_INVALID"}]}))) == "400: NAME_INVALID"
    assert str(RegistryError(500, '{"error":"boom"}')) == "500: boom"
    assert str(RegistryError(502, "<html>bad gateway</html>")) == "502: <html>bad gateway</html>"


def test_resumed_download_rate_ignores_bytes_already_present() -> None:
    layer = _Layer("pulling abc")
    layer.update(1000, 0, 0.0)
    layer.update(1000, 600, 0.01)  # the partial file's bytes show up at once
    assert layer.rate() == 0.0
    layer.update(1000, 700, 1.01)
    assert abs(layer.rate() - 100.0) < 1e-6


def test_push_to_an_http_registry_without_insecure_fails_at_once(tmp_path: Path, tiny_f16: bytes) -> None:
    port = free_port()
    models = tmp_path / "models"
    write_model(models, (f"127.0.0.1:{port}", "alice", "mario", "latest"), tiny_f16, template=CHATML)
    with ThreadedServer(Settings(models=models, host="127.0.0.1", port=port, anonymous_push=True)) as srv:
        started = time.monotonic()
        r = httpx.post(srv.url + "/api/push", json={"model": f"127.0.0.1:{port}/alice/mario"}, timeout=60)
        took = time.monotonic() - started
        error = last_line(r)["error"]
        assert "answered plain http to an https request" in error and "add --insecure" in error
        assert took < 10, took
        started = time.monotonic()
        r = httpx.post(srv.url + "/api/pull", json={"model": f"127.0.0.1:{port}/alice/mario"}, timeout=60)
        assert "add --insecure" in last_line(r)["error"] and time.monotonic() - started < 10


def test_unresolvable_registry_fails_at_once(server) -> None:
    started = time.monotonic()
    r = httpx.post(server.url + "/api/pull", json={"model": "no-such-registry.invalid/a/b"}, timeout=120)
    assert "cannot resolve the registry host 'no-such-registry.invalid'" in last_line(r)["error"]
    assert time.monotonic() - started < 15


def _self_signed(tmp_path: Path) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (tmp_path / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.PKCS8,
                                                         serialization.NoEncryption()))
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    return ctx


async def _empty(request: web.Request) -> web.Response:
    return web.json_response({})


def test_untrusted_tls_certificate_fails_at_once(server, tmp_path: Path) -> None:
    port = free_port()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_get("/{tail:.*}", _empty)
    runner = web.AppRunner(app)
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port, ssl_context=_self_signed(tmp_path)).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        started = time.monotonic()
        r = httpx.post(server.url + "/api/pull", json={"model": f"127.0.0.1:{port}/a/b"}, timeout=120)
        error = last_line(r)["error"]
        assert f"the TLS certificate of 127.0.0.1:{port} is not trusted" in error, error
        assert time.monotonic() - started < 15
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def test_push_asks_for_its_rights_before_sending_bytes(tmp_path: Path, tiny_f16: bytes, monkeypatch) -> None:
    key = tmp_path / "key" / "id_ed25519"
    monkeypatch.setenv("CORRAL_KEY", str(key))
    keys = tmp_path / "authorized_keys"
    keys.write_text(f"{public_line(key)} alice\n")
    port = free_port()
    registry_models = tmp_path / "registry"
    with ThreadedServer(Settings(models=registry_models, host="127.0.0.1", port=port, authorized_keys=keys)):
        client_models = tmp_path / "client"
        write_model(client_models, (f"127.0.0.1:{port}", "mallory", "mario", "latest"), tiny_f16)
        with ThreadedServer(Settings(models=client_models, host="127.0.0.1", port=free_port())) as client:
            r = httpx.post(client.url + "/api/push", timeout=60,
                           json={"model": f"127.0.0.1:{port}/mallory/mario", "insecure": True})
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert lines[-1]["error"].startswith("403: ") and "{" not in lines[-1]["error"]
    assert "corral key" in lines[-1]["error"]
    assert not any(line.get("status", "").startswith("pushing ") for line in lines)  # no blob was started
    assert not list((registry_models / "registry" / "uploads").glob("*"))
