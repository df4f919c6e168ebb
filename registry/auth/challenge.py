"""`WWW-Authenticate: Bearer ...` challenges: ollama's quirky parser, and a safe formatter.

The real client does not parse RFC 7235 auth-params. For each of realm, service and scope
it finds the first `<key>=` anywhere in the header, skips it and one more character (the
opening quote, assumed), and reads up to the first `"` that is followed by `,` or ends the
header (server/images.go: parseRegistryChallenge, getValue). `parse_challenge` reproduces
that exactly, so the client side of corral reads challenges as ollama does; `format_challenge`
only emits headers on which that parser and a standard one agree.
"""

from __future__ import annotations

from dataclasses import dataclass

from registry.auth import _gourl
from registry.auth.errors import ChallengeError, RealmHostMismatch

_KEYS = ("realm", "service", "scope")


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    service: str
    scope: str


def _get_value(header: str, key: str) -> str:
    start = header.find(key + "=")
    if start == -1:
        return ""
    # Skip `key=` and one more character, whatever it is: ollama assumes it is the quote.
    start += len(key) + 2
    end = start
    n = len(header)
    while end < n:
        if header[end] == '"' and (end + 1 >= n or header[end + 1] == ","):
            break
        end += 1
    # Go slices header[start:end] here; when the header ends right after `key=` that slice
    # is out of range and ollama panics. We return "" instead: never raise on input.
    return header[start:end]


def parse_challenge(header: str) -> Challenge:
    """Read a challenge exactly as ollama does. Never raises; missing keys give "".

    Quirks kept on purpose (they decide what the real client will do with our headers):
    a `"` not followed by `,` stays inside the value; unquoted values lose their first
    character and run to the end of the header; `<key>=` is found anywhere, even inside
    another value or as the tail of a longer name (`xrealm=`); key order does not matter.
    """
    if header.startswith("Bearer "):
        header = header[len("Bearer ") :]
    return Challenge(*(_get_value(header, k) for k in _KEYS))


def format_challenge(realm: str, service: str, scope: str) -> str:
    """`Bearer realm="...",service="...",scope="..."`, read identically by every parser.

    Raises ChallengeError for values that would be read differently by ollama's parser and
    an RFC 7235 one: anything outside printable ASCII (also stops header injection), `"`
    and `\\` (no escaping is possible for ollama), and any text containing `realm=`,
    `service=` or `scope=` (ollama would find the key there instead).
    """
    values = {"realm": realm, "service": service, "scope": scope}
    for name, value in values.items():
        bad = [c for c in value if not 0x20 <= ord(c) <= 0x7E or c in '"\\']
        if bad:
            raise ChallengeError(
                f"challenge {name} contains a character that cannot be sent: {bad[0]!r}"
            )
        for key in _KEYS:
            if key + "=" in value:
                raise ChallengeError(f"challenge {name} must not contain {key + '='!r}")
    return "Bearer " + ",".join(f'{k}="{v}"' for k, v in values.items())


def realm_host(realm: str) -> str:
    """The `host[:port]` of a realm as Go's url.Parse reports it ("" when it has none)."""
    try:
        return _gourl.split_url(realm).host
    except _gourl.GoURLError:
        return ""


def check_realm_host(realm: str, request_host_port: str) -> None:
    """Refuse a realm on another `host[:port]` than the request that got the 401.

    The comparison is a plain string compare, as ollama's (since v0.14.3): `reg:443` and
    `reg` differ, and the scheme is not compared. This keeps a rogue or compromised
    registry from making the client sign a token request for another host
    (GO-2025-3824). Raises RealmHostMismatch with ollama's exact message.
    """
    host = realm_host(realm)
    if host != request_host_port:
        raise RealmHostMismatch(host, request_host_port)
