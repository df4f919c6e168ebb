"""Routing /v2 raw paths, Content-Range parsing and OCI error bodies, without a server."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from registry.server.base import RepoName, parse_reference, parse_route
from registry.server.errors import (
    CODES,
    MANIFEST_BLOB_UNKNOWN,
    RegistryError,
    error_response,
    register,
)
from registry.server.uploads import _parse_content_range
from store.names import split_repository

HEX = "ab" * 32


@pytest.mark.parametrize(
    "path, kind, repo, ref",
    [
        ("/v2/", "base", None, ""),
        ("/v2", "base", None, ""),
        ("/v2/_catalog?n=1", "catalog", None, ""),
        ("/v2/token?scope=x", "token", None, ""),
        ("/v2/alice/mario/manifests/v1", "manifest", ("alice", "mario"), "v1"),
        ("/v2/mario/manifests/latest", "manifest", ("library", "mario"), "latest"),
        (f"/v2/alice/mario/blobs/sha256:{HEX}", "blob", ("alice", "mario"), f"sha256:{HEX}"),
        ("/v2/alice/mario/blobs/uploads/", "upload_start", ("alice", "mario"), ""),
        ("/v2/alice/mario/blobs/uploads", "upload_start", ("alice", "mario"), ""),
        ("/v2/x/blobs/uploads/", "upload_start", ("library", "x"), ""),
        ("/v2/alice/mario/blobs/uploads/abc", "upload", ("alice", "mario"), "abc"),
        ("/v2/alice/mario/tags/list", "tags", ("alice", "mario"), ""),
        # Repositories named like the route keywords still route by position.
        ("/v2/alice/blobs/manifests/v1", "manifest", ("alice", "blobs"), "v1"),
        ("/v2/blobs/blobs/uploads/", "upload_start", ("library", "blobs"), ""),
        ("/v2/tags/tags/list", "tags", ("library", "tags"), ""),
        ("/v2/Alice/Mario.v2/manifests/V1", "manifest", ("Alice", "Mario.v2"), "V1"),
        # OCI names deeper than <namespace>/<model>: the first component is the namespace.
        ("/v2/org/team/model/manifests/v1", "manifest", ("org", "team/model"), "v1"),
        ("/v2/a/b/c/d/tags/list", "tags", ("a", "b/c/d"), ""),
        ("/v2/my.org/model/manifests/v1", "manifest", ("my.org", "model"), "v1"),
        ("/v2/a/blobs/b/blobs/uploads/", "upload_start", ("a", "blobs/b"), ""),
        ("/v2/a/manifests/b/manifests/v1", "manifest", ("a", "manifests/b"), "v1"),
        (f"/v2/a/b/c/referrers/sha256:{HEX}", "referrers", ("a", "b/c"), f"sha256:{HEX}"),
    ],
)
def test_routes(path, kind, repo, ref):
    route = parse_route(path)
    assert route.kind == kind
    assert (None if route.repo is None else (route.repo.namespace, route.repo.model)) == repo
    assert route.ref == ref


@pytest.mark.parametrize(
    "path, code",
    [
        ("/v2/a/B/c/manifests/x", "NAME_INVALID"),
        ("/v2/a//b/manifests/x", "NAME_INVALID"),
        ("/v2/a/b//manifests/x", "NAME_INVALID"),
        ("/v2/a/b/%2e%2e/manifests/x", "NAME_INVALID"),
        ("/v2/a/b%2Fc/d/manifests/x", "NAME_INVALID"),
        ("/v2/" + "a/" * 127 + "bc/manifests/x", "NAME_INVALID"),
        ("/v2/a/../b/manifests/x", "NAME_INVALID"),
        ("/v2/%2e%2e/b/manifests/x", "NAME_INVALID"),
        ("/v2/a%2Fb/c/manifests/x", "NAME_INVALID"),
        ("/v2/a/b%ff/manifests/x", "NAME_INVALID"),
        ("/v2/a/b/unknown", "UNSUPPORTED"),
        ("/v2/a/b/manifests/", "UNSUPPORTED"),
    ],
)
def test_bad_routes(path, code):
    with pytest.raises(RegistryError) as err:
        parse_route(path)
    assert err.value.code.code == code


@given(st.text(alphabet="ab./%2eEfF:-_\\\x00", max_size=40))
@settings(max_examples=300)
def test_any_path_routes_to_a_valid_repository_or_an_oci_error(tail):
    try:
        route = parse_route("/v2/" + tail)
    except RegistryError as exc:
        assert exc.code.code in CODES
        return
    if route.repo is not None:
        assert isinstance(route.repo, RepoName)
        assert split_repository(route.repo.path) == (route.repo.namespace, route.repo.model)


def test_references():
    assert parse_reference("v1") == ("v1", None)
    assert parse_reference(f"sha256:{HEX}") == (None, f"sha256:{HEX}")
    assert parse_reference(f"sha256%3A{HEX}") == (None, f"sha256:{HEX}")
    for bad, code in [("..", "TAG_INVALID"), ("a" * 81, "TAG_INVALID"), ("sha256:abc", "DIGEST_INVALID"),
                      (f"sha256:{HEX.upper()}", "DIGEST_INVALID"), ("x:y", "DIGEST_INVALID")]:
        with pytest.raises(RegistryError) as err:
            parse_reference(bad)
        assert err.value.code.code == code


def test_content_range_forms():
    for text in ("0-9", "bytes=0-9", "bytes 0-9", "bytes 0-9/10", "0-9/*", " 0-9 "):
        assert _parse_content_range(text) == (0, 9)
    for text in ("", "9-0", "a-b", "0-", "-9", "bytes=0-9,10-19", "0-99999999999999999999"):
        with pytest.raises(RegistryError):
            _parse_content_range(text)


def test_error_body_shape_and_registration():
    exc = RegistryError(MANIFEST_BLOB_UNKNOWN, detail={"digest": f"sha256:{HEX}"})
    response = error_response(exc)
    assert response.status == 400
    assert json.loads(response.body) == {
        "errors": [{"code": "MANIFEST_BLOB_UNKNOWN", "message": MANIFEST_BLOB_UNKNOWN.message,
                    "detail": {"digest": f"sha256:{HEX}"}}]
    }
    with pytest.raises(ValueError):
        register("BLOB_UNKNOWN", "again", 404)
