"""Authorized keys shared through remote storage, for replicas on one bucket.

When the store is remote (`--storage s3://...`), the authorized keys live in the storage at
`registry/authorized_keys` (the file format of `registry.auth.authorized_keys`), and every
replica serving that storage reads that one copy:

- `--authorized-keys FILE` on a replica publishes FILE there at startup, unless the stored
  copy was written after FILE was last changed (the newest edit wins: a replica restarted
  with an old file does not undo an edit made since), and again whenever FILE changes. So
  the file of any replica is a way to edit the keys of all of them.
- A replica started without `--authorized-keys` uses the stored copy (and accepts pushes
  only when there is one).
- Every replica re-reads the stored copy every `check_s` seconds in the background (one
  small GET; never on a request), so a key added or removed on one replica is honoured or
  refused by all of them within that time.
- Fail closed, as with a local file: a stored copy that does not parse, or that was removed,
  authorizes no key until it is fixed. A published edit with a bad line therefore stops
  every replica from honouring any key (never one that the edit meant to revoke), and the
  replica whose file it was logs the line's error.

On the filesystem driver nothing changes: the file is read where it is, and replicas that
share a models directory share a path for it too.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from registry.auth import AuthorizedKeys
from registry.auth.authorized_keys import file_signature, parse_keys_bytes, read_keys_bytes
from registry.auth.errors import AuthorizedKeysError
from store.driver import PathNotFound, StorageDriver

log = logging.getLogger("corral.registry")

KEYS_KEY = "registry/authorized_keys"
CHECK_S = 2.0
_MAX_BYTES = 1 << 20


class SharedAuthorizedKeys:
    """The authorized keys stored at `KEYS_KEY`, seeded and updated from `local` if given.

    The constructor publishes `local` when it should (see the module docstring) and reads
    the stored copy; a bad `local` raises AuthorizedKeysError (startup stops). `current()`
    costs nothing; `refresh()` (from a background thread) does the I/O."""

    def __init__(self, driver: StorageDriver, local: Path | None, check_s: float = CHECK_S) -> None:
        self.driver = driver
        self.local = local
        self.check_s = check_s
        self._lock = threading.Lock()
        self._keys = AuthorizedKeys()
        self._stored: bytes | None = None
        self._local_sig: tuple[int, ...] | None = None
        self._seed()

    # -- reading ---------------------------------------------------------------------

    def current(self) -> AuthorizedKeys | None:
        """The keys in force (None when neither a file nor a stored copy configures any)."""
        if self.local is None and self._stored is None:
            return None
        return self._keys

    @property
    def configured(self) -> bool:
        """Whether keys are configured at all (pushes are possible)."""
        return self.local is not None or self._stored is not None

    # -- updating --------------------------------------------------------------------

    def _seed(self) -> None:
        if self.local is not None:
            data, st = read_keys_bytes(self.local)
            parse_keys_bytes(data, source=str(self.local))  # a bad file stops the start
            self._local_sig = file_signature(st)
            try:
                stored = self.driver.stat(KEYS_KEY)
            except PathNotFound:
                stored = None
            if stored is None or st.st_mtime >= stored.mtime:
                self._publish(data)
            else:
                log.info("the authorized keys in the storage were changed after %s: using them",
                         self.local)
        self._reload()

    def refresh(self) -> None:
        """Publish a changed local file, then re-read the stored copy."""
        with self._lock:
            if self.local is not None:
                self._check_local()
            self._reload()

    def _check_local(self) -> None:
        assert self.local is not None
        try:
            data, st = read_keys_bytes(self.local)
        except AuthorizedKeysError as exc:
            if self._local_sig != ():
                log.warning("%s; the keys in the storage stay as they are", exc)
                self._local_sig = ()
            return
        sig = file_signature(st)
        if sig == self._local_sig:
            return
        self._local_sig = sig
        try:
            parse_keys_bytes(data, source=str(self.local))
        except AuthorizedKeysError as exc:
            log.error("%s; published anyway, so no replica authorizes any key until it is fixed", exc)
        self._publish(data)
        log.info("published %s to the storage for every replica", self.local)

    def _publish(self, data: bytes) -> None:
        try:
            current = self.driver.get_content(KEYS_KEY, limit=_MAX_BYTES)
        except (PathNotFound, ValueError):
            current = None
        if current != data:
            self.driver.put_content(KEYS_KEY, data)

    def _reload(self) -> None:
        try:
            data: bytes | None = self.driver.get_content(KEYS_KEY, limit=_MAX_BYTES)
        except PathNotFound:
            data = None
        except ValueError:
            data = b"\xff" * (_MAX_BYTES + 1)  # over the limit: refused by the parser below
        if data == self._stored:
            return
        self._stored = data
        if data is None:
            log.warning("the authorized keys in the storage were removed: no key is authorized")
            self._keys = AuthorizedKeys()
            return
        try:
            self._keys = parse_keys_bytes(data, source=f"storage:{KEYS_KEY}")
            log.info("authorized keys from the storage: %d key(s)", len(self._keys))
        except AuthorizedKeysError as exc:
            log.error("%s; no key is authorized until it is fixed", exc)
            self._keys = AuthorizedKeys()
