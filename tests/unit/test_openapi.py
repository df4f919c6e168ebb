import re
from pathlib import Path

from api import openapi

SPEC = Path(__file__).resolve().parents[2] / "spec" / "openapi.json"


def test_committed_openapi_is_current():
    assert SPEC.read_text() == openapi.render(), (
        "spec/openapi.json is stale: run `python -m api.openapi > spec/openapi.json`"
    )


def test_every_api_route_is_documented():
    from api.app import create_app
    from api.settings import Settings

    app = create_app(Settings(models=Path("/nonexistent")))
    documented = {(op.method.upper(), op.path) for op in openapi.OPERATIONS}
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = re.sub(r"\{(\w+):[^}]*\}", r"{\1}", info.get("path") or info.get("formatter"))
        if route.method == "HEAD" and (("GET", path) in documented):
            continue
        if path == "/v2" or path.startswith("/v2/"):
            continue  # the registry: specified by the OCI distribution spec, not OpenAPI
        if path == "/ui" or path.startswith("/ui/"):
            continue  # the web UI's pages and their actions: README "Web UI"
        assert (route.method, path) in documented, f"{route.method} {path} missing from api/openapi.py"
