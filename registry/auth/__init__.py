"""Authentication for the registry, both sides of ollama's ed25519 handshake (spec section e).

- keys: ollama's `id_ed25519` / `id_ed25519.pub` files and the SSH wire form of public keys.
- challenge: `WWW-Authenticate` parsing exactly as ollama does, and a safe formatter.
- signing: the token request URL, the signed message, signing, and server-side verification
  with a timestamp window and a replay cache.
- scopes, authorized_keys, tokens: what a verified key may do, and the short-lived bearer
  tokens and blob grants the server hands out.

Typical server flow at the token endpoint::

    keys = authorized_keys_file.current()
    req = verify_token_request(request.headers["Authorization"], url_as_received,
                               now=time.time(), nonce_cache=cache, authorized_keys=keys,
                               service=service_name)
    granted = authorize(req.key_b64, parse_scopes(req.scopes), keys,
                        anonymous_pull=not private, anonymous_push=anonymous_push)
    return {"token": issuer.mint(req.key_b64, granted, now)}

Typical client flow on a 401::

    challenge = parse_challenge(resp.headers.get("WWW-Authenticate", ""))
    req = prepare_token_request(challenge, key, "host:port", ts=int(time.time()))
    # GET req.url with Authorization: req.authorization, then use {"token"} as Bearer.
"""

from registry.auth.authorized_keys import (
    AuthorizedKeys,
    AuthorizedKeysFile,
    KeyEntry,
    authorize,
)
from registry.auth.challenge import (
    Challenge,
    check_realm_host,
    format_challenge,
    parse_challenge,
    realm_host,
)
from registry.auth.errors import (
    AuthError,
    AuthorizedKeysError,
    BadSignature,
    ChallengeError,
    ExpiredGrant,
    ExpiredToken,
    InvalidGrant,
    InvalidPublicKey,
    InvalidToken,
    KeyFileError,
    KeyMaterialError,
    MalformedTokenRequest,
    MissingParameter,
    RealmHostMismatch,
    ReplayCacheFull,
    ReplayedNonce,
    ScopeError,
    StaleTimestamp,
    TokenRequestError,
    UnknownKey,
    WrongService,
)
from registry.auth.keys import (
    create_key_pair,
    load_or_create_key,
    load_private_key,
    parse_private_key,
    parse_public_key_b64,
    private_key_pem,
    public_key_b64,
    public_key_line,
    public_key_path,
    public_key_raw,
    public_key_wire,
)
from registry.auth.scopes import (
    CATALOG,
    DELETE,
    PULL,
    PUSH,
    REGISTRY,
    REPOSITORY,
    Scope,
    format_scopes,
    parse_scopes,
)
from registry.auth.signing import (
    DEFAULT_MAX_SKEW_S,
    EMPTY_BODY_HASH_B64,
    NonceCache,
    TokenRequest,
    VerifiedTokenRequest,
    new_nonce,
    prepare_token_request,
    sign_token_request,
    signed_message,
    token_request_url,
    verify_token_request,
)
from registry.auth.tokens import TokenClaims, TokenIssuer

__all__ = [
    "CATALOG",
    "DEFAULT_MAX_SKEW_S",
    "DELETE",
    "EMPTY_BODY_HASH_B64",
    "PULL",
    "PUSH",
    "REGISTRY",
    "REPOSITORY",
    "AuthError",
    "AuthorizedKeys",
    "AuthorizedKeysError",
    "AuthorizedKeysFile",
    "BadSignature",
    "Challenge",
    "ChallengeError",
    "ExpiredGrant",
    "ExpiredToken",
    "InvalidGrant",
    "InvalidPublicKey",
    "InvalidToken",
    "KeyEntry",
    "KeyFileError",
    "KeyMaterialError",
    "MalformedTokenRequest",
    "MissingParameter",
    "NonceCache",
    "RealmHostMismatch",
    "ReplayCacheFull",
    "ReplayedNonce",
    "Scope",
    "ScopeError",
    "StaleTimestamp",
    "TokenClaims",
    "TokenIssuer",
    "TokenRequest",
    "TokenRequestError",
    "UnknownKey",
    "VerifiedTokenRequest",
    "WrongService",
    "authorize",
    "check_realm_host",
    "create_key_pair",
    "format_challenge",
    "format_scopes",
    "load_or_create_key",
    "load_private_key",
    "new_nonce",
    "parse_challenge",
    "parse_private_key",
    "parse_public_key_b64",
    "parse_scopes",
    "prepare_token_request",
    "private_key_pem",
    "public_key_b64",
    "public_key_line",
    "public_key_path",
    "public_key_raw",
    "public_key_wire",
    "realm_host",
    "sign_token_request",
    "signed_message",
    "token_request_url",
    "verify_token_request",
]
