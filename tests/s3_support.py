"""moto's standalone S3 server on a loopback port, started once per test process, and
fresh buckets on it: the real S3 protocol (boto3 talks HTTP to it), nothing on the internet."""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "corral-test",
    "AWS_SECRET_ACCESS_KEY": "corral-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_server: tuple[object, str] | None = None
_lock = threading.Lock()


def moto_endpoint() -> str:
    """The endpoint URL of this process's moto server (started on first use)."""
    global _server
    with _lock:
        if _server is None:
            from moto.server import ThreadedMotoServer

            for k, v in CREDENTIALS.items():
                os.environ.setdefault(k, v)
            os.environ.pop("AWS_PROFILE", None)
            logging.getLogger("werkzeug").setLevel(logging.ERROR)
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            host, port = server.get_host_and_port()
            atexit.register(server.stop)
            _server = (server, f"http://{host}:{port}")
        return _server[1]


_admin: object | None = None


def new_bucket() -> str:
    """A fresh bucket on the session's moto server (one per test: nothing shared between
    tests but the server)."""
    global _admin
    endpoint = moto_endpoint()
    with _lock:
        if _admin is None:
            import boto3

            _admin = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    name = f"corral-{uuid.uuid4().hex[:16]}"
    _admin.create_bucket(Bucket=name)  # type: ignore[attr-defined]
    return name


def s3_url(prefix: str = "store", *, endpoint_host: str | None = None) -> str:
    """A `--storage` URL for a fresh bucket on the moto server. `endpoint_host` names the
    server differently (`localhost`), so that pre-signed URLs point at another host than
    the registry's 127.0.0.1, as they do in a real deployment."""
    endpoint = moto_endpoint()
    if endpoint_host:
        endpoint = endpoint.replace("127.0.0.1", endpoint_host)
    return f"s3://{new_bucket()}/{prefix}?endpoint={endpoint}&region=us-east-1&path_style=1"


def s3_driver(prefix: str = "store"):  # noqa: ANN201 - store.drivers.s3.S3Driver
    from store.drivers.s3 import S3Driver

    return S3Driver.from_url(s3_url(prefix))
