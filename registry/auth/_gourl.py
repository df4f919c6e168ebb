"""The few pieces of Go's net/url that decide the bytes ollama signs.

The token URL is built with `url.Parse(realm)`, `URL.Query()`, `Values.Encode()` and
`URL.String()`, and the signature covers the resulting string. To sign the same bytes a
Go client would, and to send exactly the bytes we signed (a URL needing no further escaping
passes through any HTTP client untouched), these helpers reproduce Go's rules. They work on
bytes because Go strings are bytes: a realm with non-ASCII text is escaped byte by byte.
"""

from __future__ import annotations

from urllib.parse import quote_from_bytes

_HEX = b"0123456789abcdefABCDEF"
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~")
# shouldEscape(c, encodePath) is false for these besides the unreserved set.
_PATH_SAFE = _UNRESERVED | frozenset(b"$&+,/:;=@")
# validEncoded(s, encodePath) additionally lets these through unescaped (and '%').
_PATH_VALID = _PATH_SAFE | frozenset(b"!'()*[]%")
# Go >= 1.24 refuses to parse a query with more than this many parameters.
_MAX_QUERY_PARAMS = 10000


class GoURLError(ValueError):
    """A string Go's url package would refuse to parse."""


def unescape(s: bytes, *, query: bool) -> bytes:
    """Go's unescape in encodeQueryComponent (query=True) or encodePath mode.

    A `%` must be followed by two hex digits, else the whole thing is an error; in query
    mode `+` means space.
    """
    if b"%" not in s and not (query and b"+" in s):
        return s
    out = bytearray()
    i = 0
    n = len(s)
    while i < n:
        c = s[i]
        if c == 0x25:  # '%'
            h = s[i + 1 : i + 3]
            if len(h) != 2 or h[0] not in _HEX or h[1] not in _HEX:
                raise GoURLError(f"invalid URL escape {s[i : i + 3]!r}")
            out.append(int(h, 16))
            i += 3
        elif c == 0x2B and query:  # '+'
            out.append(0x20)
            i += 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def parse_query(raw: bytes) -> list[tuple[bytes, bytes]]:
    """Go's url.ParseQuery, keeping what `URL.Query()` keeps (it ignores the error).

    Pairs are split on `&` only; a pair containing `;` is dropped (Go >= 1.17); a pair whose
    key or value has a bad escape is dropped; `k` without `=` means value "". Order is kept.
    """
    if raw.count(b"&") + 1 > _MAX_QUERY_PARAMS:
        return []
    pairs: list[tuple[bytes, bytes]] = []
    for part in raw.split(b"&"):
        if not part or b";" in part:
            continue
        k, _, v = part.partition(b"=")
        try:
            pairs.append((unescape(k, query=True), unescape(v, query=True)))
        except GoURLError:
            continue
    return pairs


def query_escape(s: bytes) -> str:
    """Go's url.QueryEscape: space -> '+', all but A-Za-z0-9-_.~ as %XX (uppercase hex)."""
    return quote_from_bytes(s, safe=b" ").replace(" ", "+")


def encode_values(pairs: list[tuple[bytes, bytes]]) -> str:
    """Go's Values.Encode: keys sorted bytewise, repeated keys keep their relative order."""
    ordered = sorted(pairs, key=lambda kv: kv[0])  # stable: same-key values keep order
    return "&".join(f"{query_escape(k)}={query_escape(v)}" for k, v in ordered)


def escaped_path(raw: bytes) -> str:
    """What Go's URL.EscapedPath() returns for a path parsed from `raw`.

    Go keeps the original spelling when it is a valid encoding (so `%2F` stays `%2F`), and
    otherwise re-escapes the decoded path (so a space becomes `%20`).
    """
    decoded = unescape(raw, query=False)  # raises on a bad escape, as url.Parse does
    if all(c in _PATH_VALID for c in raw):
        return raw.decode("ascii")
    return quote_from_bytes(decoded, safe=bytes(sorted(_PATH_SAFE - _UNRESERVED)))


class GoSplit:
    """The parts of an absolute URL as Go's url.Parse sees them (fragment dropped)."""

    __slots__ = ("scheme", "userinfo", "host", "path", "raw_query", "has_authority")

    def __init__(
        self,
        scheme: str,
        userinfo: str | None,
        host: str,
        path: str,
        raw_query: str,
        has_authority: bool,
    ) -> None:
        self.scheme = scheme
        self.userinfo = userinfo
        self.host = host
        self.path = path
        self.raw_query = raw_query
        self.has_authority = has_authority


def _get_scheme(s: str) -> tuple[str, str]:
    # Go's getScheme: letters first, then letters/digits/+-. up to ':'.
    for i, c in enumerate(s):
        if c.isascii() and c.isalpha():
            continue
        if c.isascii() and (c.isdigit() or c in "+-."):
            if i == 0:
                return "", s
            continue
        if c == ":":
            if i == 0:
                raise GoURLError("missing protocol scheme")
            return s[:i], s[i + 1 :]
        return "", s
    return "", s


def split_url(s: str) -> GoSplit:
    """Split like url.Parse: fragment, scheme (lower-cased), query, authority, path.

    Raises GoURLError where Go would refuse the URL for reasons that matter here
    (control characters, a missing scheme before ':').
    """
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        raise GoURLError("invalid control character in URL")
    s = s.partition("#")[0]
    scheme, rest = _get_scheme(s)
    scheme = scheme.lower()
    rest, _, raw_query = rest.partition("?")
    if rest.startswith("//") and (scheme or not rest.startswith("///")):
        authority, slash, path = rest[2:].partition("/")
        userinfo, at, host = authority.rpartition("@")
        return GoSplit(scheme, userinfo if at else None, host, slash + path, raw_query, True)
    return GoSplit(scheme, None, "", rest, raw_query, False)
