import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.digest import Digest, blob_path, is_digest
from store.errors import InvalidDigest

VALID = "sha256:" + "ab" * 32
ORACLE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")


def test_valid_digest_properties():
    d = Digest(VALID)
    assert d == VALID
    assert d.hex == "ab" * 32
    assert d.filename == "sha256-" + "ab" * 32
    assert d.short == "ab" * 6
    assert Digest.from_filename(d.filename) == d
    assert Digest.of_bytes(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@pytest.mark.parametrize(
    "bad",
    [
        "sha256:" + "AB" * 32,  # uppercase hex
        "sha256-" + "ab" * 32,  # file-name form on the wire
        "sha256:" + "ab" * 31,  # too short
        "sha256:" + "ab" * 33,  # too long
        "sha512:" + "ab" * 64,
        "sha256:" + "ab" * 31 + "zz",
        "sha256:../../../../etc/passwd",
        "sha256:" + "ab" * 32 + "\n",
        "sha256:" + "ab" * 32 + "/..",
        "%2e%2e/sha256:" + "ab" * 32,
        "",
        "sha256:",
    ],
)
def test_rejects_bad_digests(bad):
    with pytest.raises(InvalidDigest):
        Digest(bad)
    assert not is_digest(bad)


@given(st.text())
def test_only_the_exact_form_is_a_digest(text):
    if ORACLE.match(text):
        assert Digest(text) == text
    else:
        with pytest.raises(InvalidDigest):
            Digest(text)


@given(st.from_regex(r"\Asha256:[0-9a-f]{64}\Z"))
def test_blob_path_stays_in_blobs_dir(text):
    root = Path("/store")
    path = blob_path(root, Digest(text))
    assert path.parent == root / "blobs"
    assert path.name == "sha256-" + text[7:]


def test_non_string_rejected():
    with pytest.raises(InvalidDigest):
        Digest(123)
