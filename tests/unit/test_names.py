import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from store.errors import InvalidName
from store.names import ModelName

# Spec a.1's validity table, restated independently as regular expressions.
PART_RE = {
    "host": re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,349}\Z"),
    "namespace": re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_\-]{0,79}\Z"),
    "model": re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}\Z"),
    "tag": re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.\-]{0,79}\Z"),
}


@pytest.mark.parametrize(
    "text, expected, shortest",
    [
        ("llama3.2", ("registry.ollama.ai", "library", "llama3.2", "latest"), "llama3.2:latest"),
        ("llama3.2:1b", ("registry.ollama.ai", "library", "llama3.2", "1b"), "llama3.2:1b"),
        ("alice/mario", ("registry.ollama.ai", "alice", "mario", "latest"), "alice/mario:latest"),
        ("localhost:5000/alice/m", ("localhost:5000", "alice", "m", "latest"), "localhost:5000/alice/m:latest"),
        ("host:5000/ns/m:v1", ("host:5000", "ns", "m", "v1"), "host:5000/ns/m:v1"),
        ("http://h.example/ns/m:t", ("h.example", "ns", "m", "t"), "h.example/ns/m:t"),
        ("REGISTRY.OLLAMA.AI/library/X", ("REGISTRY.OLLAMA.AI", "library", "X", "latest"), "X:latest"),
        ("registry.ollama.ai/Library/x", ("registry.ollama.ai", "Library", "x", "latest"), "x:latest"),
    ],
)
def test_parse_defaults_and_display(text, expected, shortest):
    name = ModelName.parse(text)
    assert (name.host, name.namespace, name.model, name.tag) == expected
    assert name.display_shortest() == shortest


@pytest.mark.parametrize(
    "bad",
    [
        "", "model:", "/model", "ns/", ":tag", "a/b/c/d", "a b", "../x", "x/../y", "..",
        "m@sha256:" + "a" * 64, "ns.dot/m", "m:t:x", "-m", ".m", "m/" + "x" * 81,
        "m:" + "t" * 81, "é", "h/ns/m:t/x", "%2e%2e/m", "m:%2F", "ns:1/m",
    ],
)
def test_invalid_names(bad):
    with pytest.raises(InvalidName):
        ModelName.parse(bad)


def test_case_insensitive_equality_keeps_case():
    a = ModelName.parse("Alice/Mario:V1")
    b = ModelName.parse("alice/mario:v1")
    assert a.same_as(b)
    assert a.model == "Mario"


def _part(kind: str) -> st.SearchStrategy[str]:
    first = "abcXYZ019_"
    later = {"host": "aZ09_-.:", "namespace": "aZ09_-", "model": "aZ09_-.", "tag": "aZ09_-."}[kind]
    size = {"host": 60, "namespace": 80, "model": 80, "tag": 80}[kind]
    return st.builds(
        lambda a, b: a + b,
        st.sampled_from(first),
        st.text(alphabet=later, max_size=size - 1),
    )


@given(_part("host"), _part("namespace"), _part("model"), _part("tag"))
def test_round_trip_of_valid_names(host, ns, model, tag):
    name = ModelName(host, ns, model, tag, "https")
    assert name.is_valid
    parsed = ModelName.parse(str(name))
    assert (parsed.host, parsed.namespace, parsed.model, parsed.tag) == (host, ns, model, tag)
    assert ModelName.parse(name.display_shortest()).same_as(name)


@given(st.text(alphabet="aZ09_-.:/@ %é", max_size=40))
def test_validity_matches_the_table(text):
    name = ModelName.parse_lenient(text)
    expected = all(PART_RE[k].match(getattr(name, k)) for k in PART_RE)
    assert name.is_valid == bool(expected)
    if name.is_valid:
        # A valid name never holds anything a path could be confused by.
        assert ".." not in name.namespace and "/" not in str(name.relpath().name)
        assert all(p not in ("", ".", "..") for p in name.relpath().parts)


# --- OCI repository names deeper than <namespace>/<model> -----------------------------------

# distribution-spec's component grammar, restated independently.
OCI_COMPONENT = re.compile(r"\A[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*\Z")
_ALNUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@st.composite
def _oci_component(draw: st.DrawFn) -> str:
    out = draw(_ALNUM)
    for sep, more in draw(st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--", "---"]), _ALNUM),
                                   max_size=3)):
        out += sep + more
    return out


def _oracle(path: str) -> tuple[str, str] | None:
    """What split_repository must answer, from the two grammars' tables."""
    parts = path.split("/")
    if len(parts) == 1:
        return ("library", parts[0]) if PART_RE["model"].match(parts[0]) else None
    if len(parts) == 2 and PART_RE["namespace"].match(parts[0]) and PART_RE["model"].match(parts[1]):
        return parts[0], parts[1]
    if len(path) <= 255 and all(OCI_COMPONENT.match(c) for c in parts):
        return parts[0], "/".join(parts[1:])
    return None


@given(st.lists(_oci_component(), min_size=1, max_size=8), _part("tag"))
def test_oci_names_are_accepted_and_stored_without_collision_or_escape(components, tag):
    from store.names import DEEP_SEPARATOR, split_repository

    path = "/".join(components)
    split = split_repository(path)
    assert split == _oracle(path)
    if split is None:
        assert len(path) > 255 or len(components) == 1
        return
    name = ModelName("localhost:5000", split[0], split[1], tag, scheme="https")
    assert name.is_storable
    rel = name.relpath().parts
    assert len(rel) == 4 and all(p and p not in (".", "..") and "/" not in p for p in rel)
    assert ModelName.from_parts(rel) == name  # the stored name reads back as itself
    # A deeper name is never stored where an ollama name could be, and ollama's grammar
    # never parses one from text.
    if len(components) > 2:
        assert name.is_oci and DEEP_SEPARATOR in rel[2]
        assert not ModelName.parse_lenient(f"localhost:5000/{path}:{tag}").is_valid
        assert name.display_shortest() == f"localhost:5000/{path}:{tag}"


@given(st.text(alphabet="aB0._-/%~:.", max_size=24))
def test_repository_grammar_matches_the_oracle(path):
    from store.names import split_repository

    assert split_repository(path) == _oracle(path)


@given(st.lists(st.text(alphabet="ab.:_-", min_size=1, max_size=6), min_size=4, max_size=4))
def test_stored_paths_decode_only_to_names_that_encode_back(parts):
    name = ModelName.from_parts(parts)
    if name is not None:
        assert name.is_storable and tuple(name.relpath().parts) == tuple(parts)


@given(st.lists(_oci_component(), min_size=2, max_size=8), _part("tag"), st.booleans())
def test_storable_names_parse_back_from_their_full_form(components, tag, with_tag):
    """`parse_storable` (bundles' names) reads back every name the store can hold from the
    form `display_shortest` and `str` write; an ollama name means what `parse` says."""
    from store.names import split_repository

    path = "/".join(components)
    split = split_repository(path)
    if split is None:
        return
    name = ModelName("localhost:5000", split[0], split[1], tag if with_tag else "latest", "https")
    for text in (str(name), name.display_shortest()):
        assert ModelName.parse_storable(text) == name
    if with_tag is False:
        assert ModelName.parse_storable(f"localhost:5000/{path}") == name
    if name.is_valid:
        assert ModelName.parse_storable(path) == ModelName.parse(path)


@given(st.text(alphabet="aZ09_-.:/@ %", max_size=40))
def test_parse_storable_accepts_only_storable_names(text):
    try:
        name = ModelName.parse_storable(text)
    except InvalidName:
        assert not ModelName.parse_lenient(text).is_valid
        return
    assert name.is_storable
    assert name.is_valid == ModelName.parse_lenient(text).is_valid
    assert all(p and p not in (".", "..") for p in name.relpath().parts)
