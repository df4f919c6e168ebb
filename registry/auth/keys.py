"""Ed25519 key pairs in the files ollama uses, and the SSH wire form of public keys.

ollama keeps `~/.ollama/id_ed25519` (an unencrypted "OPENSSH PRIVATE KEY" PEM, mode 0600)
and `id_ed25519.pub` (`ssh-ed25519 <base64>\\n`, no comment, mode 0644), written on the
first start of `ollama serve` (cmd/cmd.go: initializeKeypair). We read and write the same
files, so an existing ollama key works with corral and a corral key works with ollama.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
import struct
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from registry.auth.errors import InvalidPublicKey, KeyFileError

log = logging.getLogger(__name__)

KEY_TYPE = "ssh-ed25519"
# uint32 length + "ssh-ed25519" + uint32 length + 32 key bytes.
_WIRE_PREFIX = struct.pack(">I", len(KEY_TYPE)) + KEY_TYPE.encode() + struct.pack(">I", 32)
WIRE_LEN = len(_WIRE_PREFIX) + 32  # 51 bytes -> 68 base64 characters
PUBLIC_KEY_B64_PREFIX = "AAAAC3NzaC1lZDI1NTE5AAAAI"
# A key file is a few hundred bytes; refuse to slurp anything large by mistake.
_MAX_KEY_FILE = 64 * 1024


# --- public keys ------------------------------------------------------------------------


def public_key_wire(pub: Ed25519PublicKey) -> bytes:
    """The SSH wire encoding (RFC 8709): string "ssh-ed25519", string <32 key bytes>."""
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _WIRE_PREFIX + raw


def public_key_b64(pub: Ed25519PublicKey) -> str:
    """Standard padded base64 of the wire form: the `<PUB>` half of ollama's signature header.

    Always 68 characters starting with `AAAAC3NzaC1lZDI1NTE5AAAAI`.
    """
    return base64.b64encode(public_key_wire(pub)).decode("ascii")


def public_key_line(pub: Ed25519PublicKey) -> str:
    """The authorized_keys line, without comment or newline: `ssh-ed25519 AAAA...`."""
    return f"{KEY_TYPE} {public_key_b64(pub)}"


def public_key_raw(pub: Ed25519PublicKey) -> bytes:
    """The 32 raw key bytes (what identities are compared on)."""
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def parse_public_key_b64(s: str) -> Ed25519PublicKey:
    """Decode the base64 SSH wire form of an Ed25519 public key, strictly.

    Refused: anything but canonical padded standard base64 (so one key has exactly one
    spelling, which keeps string comparisons of keys sound), a wire blob whose type is not
    `ssh-ed25519`, a key that is not 32 bytes, and trailing data.
    """
    if not isinstance(s, str):
        raise InvalidPublicKey("public key must be a string")
    # Cheap length check first: this is parsed from unauthenticated headers.
    if len(s) != 68:
        raise InvalidPublicKey(
            f"public key must be 68 base64 characters (ssh-ed25519 wire form), got {len(s)}"
        )
    try:
        wire = base64.b64decode(s.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidPublicKey("public key is not valid base64") from None
    if base64.b64encode(wire).decode("ascii") != s:
        raise InvalidPublicKey("public key is not canonical base64")
    return _parse_wire(wire)


def _parse_wire(wire: bytes) -> Ed25519PublicKey:
    # Walk the structure field by field so each defect gets its own message.
    if len(wire) < 4:
        raise InvalidPublicKey("public key is truncated")
    (type_len,) = struct.unpack(">I", wire[:4])
    key_type = wire[4 : 4 + type_len]
    if len(key_type) != type_len:
        raise InvalidPublicKey("public key is truncated")
    if key_type != KEY_TYPE.encode():
        shown = key_type[:32].decode("ascii", "replace")
        raise InvalidPublicKey(
            f"unsupported key type {shown!r}: only ssh-ed25519 keys are accepted"
        )
    rest = wire[4 + type_len :]
    if len(rest) < 4:
        raise InvalidPublicKey("public key is truncated")
    (key_len,) = struct.unpack(">I", rest[:4])
    if key_len != 32:
        raise InvalidPublicKey(f"ed25519 public key must be 32 bytes, got {key_len}")
    raw = rest[4:]
    if len(raw) < 32:
        raise InvalidPublicKey("public key is truncated")
    if len(raw) > 32:
        raise InvalidPublicKey("public key has trailing data")
    return Ed25519PublicKey.from_public_bytes(raw)


# --- private keys -----------------------------------------------------------------------


def parse_private_key(data: bytes) -> Ed25519PrivateKey:
    """Parse an unencrypted Ed25519 private key.

    Accepts OpenSSH format (what ollama and `ssh-keygen -t ed25519` write) and PKCS#8 PEM
    (`openssl genpkey -algorithm ed25519`), the two forms x/crypto/ssh's ParsePrivateKey
    reads for Ed25519.
    """
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        loader = serialization.load_ssh_private_key
    elif b"-----BEGIN PRIVATE KEY-----" in data:
        loader = serialization.load_pem_private_key
    elif b"-----BEGIN ENCRYPTED PRIVATE KEY-----" in data:
        raise KeyFileError("encrypted private keys are not supported (ollama can't use them)")
    else:
        raise KeyFileError("not an OpenSSH or PKCS#8 PEM private key")
    try:
        key = loader(data, password=None)
    except TypeError:
        # cryptography's way of saying "password-protected, and no password was given".
        raise KeyFileError(
            "the private key is passphrase-protected; ollama and corral need an unencrypted key"
        ) from None
    except (ValueError, binascii.Error, UnsupportedAlgorithm) as e:
        raise KeyFileError(f"cannot parse private key: {e}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"only ed25519 keys are supported, got {type(key).__name__}")
    return key


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Read and parse a private key file (see `parse_private_key`)."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read private key {p}: {e.strerror or e}") from None
    if len(data) > _MAX_KEY_FILE:
        raise KeyFileError(f"{p}: file too large to be a private key")
    try:
        return parse_private_key(data)
    except KeyFileError as e:
        raise KeyFileError(f"{p}: {e}") from None


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    """OpenSSH PEM of an unencrypted key, laid out as x/crypto/ssh's MarshalPrivateKey does.

    Same structure (cipher "none", one key, empty comment, padding 1,2,3... to 8 bytes) and
    the same 64-column base64 lines as Go's pem.EncodeToMemory.
    """
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    return _rewrap_pem(pem, 64)


def _rewrap_pem(pem: bytes, width: int) -> bytes:
    lines = pem.strip().splitlines()
    header, footer, body = lines[0], lines[-1], b"".join(lines[1:-1])
    chunks = [body[i : i + width] for i in range(0, len(body), width)]
    return b"\n".join([header, *chunks, footer]) + b"\n"


def public_key_path(private_path: str | os.PathLike[str]) -> Path:
    """Where the `.pub` companion of a private key file lives."""
    p = Path(private_path)
    return p.with_name(p.name + ".pub")


def create_key_pair(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Generate a key pair and write it as ollama does; fail if the private key exists.

    The private key appears atomically and exclusively (written to a temporary file, then
    hard-linked into place), so two processes starting at once never leave a torn file or
    overwrite each other's key: the loser gets FileExistsError and should load the winner's.
    """
    priv_path = Path(path)
    # ollama: os.MkdirAll(dir, 0o755); existing directories keep their mode.
    priv_path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    _write_exclusive(priv_path, private_key_pem(key), 0o600)
    line = public_key_line(key.public_key()) + "\n"
    _write_replace(public_key_path(priv_path), line.encode("ascii"), 0o644)
    return key


def load_or_create_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """Load the private key at `path`, generating the pair there first if it is absent.

    Like ollama, an existing private key is used as is and its `.pub` is not rewritten.
    """
    priv_path = Path(path)
    if not priv_path.exists():
        log.info("couldn't find %s; generating a new ed25519 key pair", priv_path)
        try:
            return create_key_pair(priv_path)
        except FileExistsError:
            pass  # another process won the race: use its key
        except OSError as e:
            raise KeyFileError(
                f"cannot create key pair at {priv_path}: {e.strerror or e}"
            ) from None
    return load_private_key(priv_path)


def _create_synced(path: Path, data: bytes, mode: int, *, exclusive: bool = True) -> None:
    """Create `path` (if `exclusive`, it must not exist; else it is truncated), write
    `data` and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC), mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _create_synced(tmp, data, mode)
    try:
        try:
            os.link(tmp, path)  # fails with FileExistsError if someone else got there first
        except FileExistsError:
            raise
        except OSError:
            # Filesystems without hard links: fall back to an exclusive create in place.
            _create_synced(path, data, mode)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_replace(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    _create_synced(tmp, data, mode, exclusive=False)
    os.replace(tmp, path)
