"""The S3 driver: the store in S3-compatible object storage (AWS S3, MinIO, Ceph RGW, R2,
Garage), on boto3.

`s3://bucket/prefix?endpoint=http://host:port&region=us-east-1&path_style=1` names the
place; credentials come from boto3's standard chain (AWS_ACCESS_KEY_ID and friends,
AWS_PROFILE, the shared config files, instance roles).

Layout below `<prefix>`: a committed path is the object `<prefix><path>`. Its staging area
lives under `<prefix>.staging/<path>/` (a name no valid path can spell, so never listed):

- `lock`: created with a conditional write (`If-None-Match: *`) by the one writer that
  holds the area, holding its lease expiry; a second writer, in any process or replica,
  gets WriterBusy until it is released or the lease (refreshed as parts go up) expires;
- `state`: JSON with the multipart upload id, the parts uploaded so far (each
  `PART_SIZE` bytes, above S3's 5 MiB minimum) and when the bytes last changed;
- `tail`: the bytes after the last part (fewer than `PART_SIZE`).

A writer buffers up to one part in memory; `close` saves `tail` and `state` so that a
later writer, on this replica or another, resumes after them; `commit` uploads the tail as
the last (possibly smaller) part and completes the multipart upload, which S3 publishes
atomically, or puts small content with one PUT. So a `/v2` chunked upload becomes one
multipart upload whose session state lives in the bucket.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from store.driver import (
    FileInfo,
    FileWriter,
    PathNotFound,
    StorageDriver,
    WriterBusy,
    validate_path,
)

# botocore logs at INFO where it found credentials on every start: not news for a server log.
logging.getLogger("botocore").setLevel(logging.WARNING)

PART_SIZE = 8 * 1024 * 1024
LEASE_S = 15 * 60.0
STAGING = ".staging/"
_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchUpload")


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _missing(exc: ClientError) -> bool:
    return _code(exc) in _MISSING


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes", "on")


_SESSION: Any = None
_SESSION_LOCK = threading.Lock()


def _new_client(**kwargs: Any) -> Any:
    """An S3 client from one boto3 session per process: a session loads the service model
    and resolves credentials once (a fresh session per client costs about 0.2 s)."""
    global _SESSION
    with _SESSION_LOCK:  # sessions are not safe to create clients from concurrently
        if _SESSION is None:
            _SESSION = boto3.session.Session()
        return _SESSION.client("s3", **kwargs)


class S3Driver(StorageDriver):
    name = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        path_style: bool = False,
        client: Any = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url
        if client is None:
            config = Config(
                s3={"addressing_style": "path" if path_style else "auto"},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=32,
            )
            client = _new_client(endpoint_url=endpoint_url, region_name=region or "us-east-1", config=config)
        self.client = client
        self._active: dict[str, _S3Writer] = {}
        self._lock = threading.Lock()
        self._owner = uuid.uuid4().hex

    @classmethod
    def from_url(cls, url: str) -> S3Driver:
        from store.storage import StorageConfigError

        parts = urlsplit(url)
        if not parts.netloc:
            raise StorageConfigError(f"--storage {url}: name a bucket, as s3://bucket/prefix")
        q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        driver = cls(
            parts.netloc,
            parts.path,
            endpoint_url=q.get("endpoint") or os.environ.get("AWS_ENDPOINT_URL_S3") or None,
            region=q.get("region") or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
            path_style=_truthy(q.get("path_style") or q.get("force_path_style")),
        )
        driver.check(url)
        return driver

    def check(self, label: str) -> None:
        """Fail with one clear line if the bucket cannot be used (startup)."""
        from store.storage import StorageConfigError

        where = self.endpoint_url or "AWS S3"
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except EndpointConnectionError:
            raise StorageConfigError(f"--storage {label}: cannot reach the S3 endpoint {where}") from None
        except ClientError as exc:
            code = _code(exc)
            if code in ("404", "NoSuchBucket", "NotFound"):
                raise StorageConfigError(f"--storage {label}: bucket {self.bucket!r} does not exist at {where}") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden"):
                raise StorageConfigError(
                    f"--storage {label}: {where} refused the credentials for bucket {self.bucket!r} "
                    "(check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE)"
                ) from None
            raise StorageConfigError(f"--storage {label}: {where} answered {code or exc}") from None
        except BotoCoreError as exc:
            raise StorageConfigError(f"--storage {label}: {str(exc).splitlines()[0]}") from None

    # -- keys ------------------------------------------------------------------------

    def _key(self, path: str) -> str:
        return self.prefix + path

    def _stage(self, path: str) -> str:
        return f"{self.prefix}{STAGING}{path}/"

    def _list_keys(self, prefix: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            out.extend(page.get("Contents", []))
        return out

    def _delete_keys(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i : i + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    # -- reading ---------------------------------------------------------------------

    def stat(self, path: str) -> FileInfo:
        validate_path(path)
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(path))
            return FileInfo(path, head["ContentLength"], head["LastModified"].timestamp())
        except ClientError as exc:
            if not _missing(exc):
                raise
        page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=self._key(path) + "/", MaxKeys=1)
        for obj in page.get("Contents", []):
            return FileInfo(path, 0, obj["LastModified"].timestamp(), True)
        raise PathNotFound(path)

    def read(self, path: str, offset: int = 0, length: int | None = None) -> bytes:
        validate_path(path)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:
            self.stat(path)
            return b""
        rng = f"bytes={offset}-" + ("" if length is None else str(offset + length - 1))
        try:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(path)}
            if offset or length is not None:
                kwargs["Range"] = rng
            return self.client.get_object(**kwargs)["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                raise PathNotFound(path) from None
            if _code(exc) == "InvalidRange":
                return b""
            raise

    def open_read(self, path: str, offset: int = 0) -> BinaryIO:
        validate_path(path)
        if offset < 0:
            raise ValueError("offset must not be negative")
        try:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._key(path)}
            if offset:
                kwargs["Range"] = f"bytes={offset}-"
            body = self.client.get_object(**kwargs)["Body"]
        except ClientError as exc:
            if _missing(exc):
                raise PathNotFound(path) from None
            if _code(exc) == "InvalidRange":
                return io.BytesIO(b"")
            raise
        return _Body(body)

    def list(self, path: str) -> list[str]:
        validate_path(path, allow_root=True)
        prefix = self._key(path) + "/" if path else self.prefix
        out: set[str] = set()
        for page in self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        ):
            names = [p["Prefix"][len(prefix) :].rstrip("/") for p in page.get("CommonPrefixes", [])]
            names += [o["Key"][len(prefix) :] for o in page.get("Contents", [])]
            for name in names:
                child = f"{path}/{name}" if path else name
                try:
                    validate_path(child)
                except ValueError:
                    continue
                out.add(child)
        if not out and path:
            raise PathNotFound(path)
        return sorted(out)

    def list_files(self, path: str) -> list[FileInfo]:
        validate_path(path, allow_root=True)
        prefix = self._key(path) + "/" if path else self.prefix
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix, Delimiter="/"
        )
        return self._infos(path, prefix, (obj for page in pages for obj in page.get("Contents", [])))

    def walk_files(self, path: str) -> list[FileInfo]:
        validate_path(path, allow_root=True)
        prefix = self._key(path) + "/" if path else self.prefix
        return self._infos(path, prefix, self._list_keys(prefix))

    @staticmethod
    def _infos(path: str, prefix: str, objects: Iterable[dict[str, Any]]) -> list[FileInfo]:
        """Listed objects as FileInfo under `path` (keys that are no valid path skipped), sorted."""
        out = []
        for obj in objects:
            rel = obj["Key"][len(prefix) :]
            child = f"{path}/{rel}" if path else rel
            try:
                validate_path(child)
            except ValueError:
                continue
            out.append(FileInfo(child, obj["Size"], obj["LastModified"].timestamp()))
        return sorted(out, key=lambda f: f.path)

    # -- writing ---------------------------------------------------------------------

    def writer(self, path: str, append: bool = False) -> FileWriter:
        validate_path(path)
        return _S3Writer(self, path, append)

    def _state(self, path: str) -> dict[str, Any] | None:
        try:
            raw = self.client.get_object(Bucket=self.bucket, Key=self._stage(path) + "state")["Body"].read()
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        try:
            state = json.loads(raw)
        except ValueError:
            return None
        return state if isinstance(state, dict) else None

    def staged(self, path: str) -> FileInfo | None:
        validate_path(path)
        with self._lock:
            live = self._active.get(path)
        if live is not None:
            return FileInfo(path, live.size, live.modified)
        state = self._state(path)
        if state is None:
            return None
        size = sum(p[2] for p in state.get("parts", [])) + int(state.get("tail", 0))
        return FileInfo(path, size, float(state.get("modified", 0)))

    def list_staged(self, path: str) -> list[FileInfo]:
        validate_path(path, allow_root=True)
        base = self.prefix + STAGING + (path + "/" if path else "")
        out = []
        for obj in self._list_keys(base):
            rest = obj["Key"][len(base) :]
            if rest.count("/") != 1:
                continue
            name, leaf = rest.split("/")
            if leaf not in ("state", "lock"):
                continue
            child = f"{path}/{name}" if path else name
            if any(f.path == child for f in out):
                continue
            info = self.staged(child)
            out.append(info or FileInfo(child, 0, obj["LastModified"].timestamp()))
        return out

    def writer_alive(self, path: str) -> bool | None:
        validate_path(path)
        with self._lock:
            if path in self._active:
                return True
        lease = self._lease(path)
        if lease is None:
            return False
        return lease > time.time()

    def _lease(self, path: str) -> float | None:
        try:
            raw = self.client.get_object(Bucket=self.bucket, Key=self._stage(path) + "lock")["Body"].read()
            return float(json.loads(raw)["until"])
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        except (ValueError, KeyError, TypeError):
            return 0.0

    def move(self, src: str, dst: str) -> None:
        validate_path(src)
        validate_path(dst)
        try:
            self.client.copy(
                {"Bucket": self.bucket, "Key": self._key(src)}, self.bucket, self._key(dst)
            )
        except ClientError as exc:
            if _missing(exc):
                raise PathNotFound(src) from None
            raise
        self.client.delete_object(Bucket=self.bucket, Key=self._key(src))

    def delete(self, path: str) -> None:
        validate_path(path)
        key = self._key(path)
        found = False
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            self.client.delete_object(Bucket=self.bucket, Key=key)
            found = True
        except ClientError as exc:
            if not _missing(exc):
                raise
        below = [o["Key"] for o in self._list_keys(key + "/")]
        staged = self._list_keys(self._stage(path))
        for obj in staged:
            if obj["Key"].endswith("/state"):
                self._abort_upload(obj["Key"])
        below += [o["Key"] for o in staged]
        if below:
            self._delete_keys(below)
            found = True
        if not found:
            raise PathNotFound(path)

    def _abort_upload(self, state_key: str) -> None:
        try:
            state = json.loads(self.client.get_object(Bucket=self.bucket, Key=state_key)["Body"].read())
            upload_id, target = state.get("upload_id"), state.get("key")
            if upload_id and target:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload_id)
        except (ClientError, ValueError, AttributeError):
            pass

    def touch(self, path: str) -> None:
        validate_path(path)
        key = self._key(path)
        try:
            self.client.copy_object(
                Bucket=self.bucket, Key=key, CopySource={"Bucket": self.bucket, "Key": key},
                MetadataDirective="REPLACE", Metadata={"touched": str(int(time.time()))},
            )
        except ClientError:
            pass

    def redirect_url(self, path: str, *, method: str = "GET", expires_in: int = 900) -> str | None:
        validate_path(path)
        op = {"GET": "get_object", "HEAD": "head_object"}.get(method.upper(), "get_object")
        return self.client.generate_presigned_url(
            op, Params={"Bucket": self.bucket, "Key": self._key(path)}, ExpiresIn=expires_in
        )

    def put_content(self, path: str, data: bytes) -> None:
        """One PUT: an object store publishes a whole object atomically (readers see the old
        bytes or the new, never a part), so a small file needs no staging, lock or commit
        round trips (manifests, links, the listing generation, token secret, keys)."""
        validate_path(path)
        self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data)

    def put_if_absent(self, path: str, data: bytes) -> bool:
        """Create `path` only if nothing is there (a conditional write); False if it was."""
        validate_path(path)
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(path), Body=data, IfNoneMatch="*")
            return True
        except ClientError as exc:
            if _code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                return False
            raise


class _Body(io.RawIOBase):
    """A botocore streaming body as a binary file."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        return self._body.read(None if size is None or size < 0 else size)

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class _S3Writer(FileWriter):
    def __init__(self, driver: S3Driver, path: str, append: bool) -> None:
        self._d = driver
        self.path = path
        self._stage = driver._stage(path)
        self._target = driver._key(path)
        self._acquire()
        with driver._lock:
            driver._active[path] = self
        self._closed = False
        try:
            state = driver._state(path) if append else None
            if not append:
                self._discard_staged()
            self._upload_id: str | None = None
            self._parts: list[list[Any]] = []
            self._buf = bytearray()
            self._modified = time.time()
            if state is not None:
                self._upload_id = state.get("upload_id")
                self._parts = [list(p) for p in state.get("parts", [])]
                self._modified = float(state.get("modified", self._modified))
                if int(state.get("tail", 0)):
                    self._buf = bytearray(self._get(self._stage + "tail"))
            self._open = (len(self._parts), bytes(self._buf))
        except BaseException:
            self._release()
            raise

    # -- the lock --------------------------------------------------------------------

    def _lock_body(self) -> bytes:
        return json.dumps({"owner": self._d._owner, "until": time.time() + LEASE_S}).encode()

    def _acquire(self) -> None:
        d = self._d
        for _ in range(2):
            try:
                d.client.put_object(Bucket=d.bucket, Key=self._stage + "lock", Body=self._lock_body(),
                                    IfNoneMatch="*")
                return
            except ClientError as exc:
                if _code(exc) not in ("PreconditionFailed", "412", "ConditionalRequestConflict"):
                    raise
            lease = d._lease(self.path)
            if lease is not None and lease > time.time():
                raise WriterBusy(self.path)
            d.client.delete_object(Bucket=d.bucket, Key=self._stage + "lock")  # expired: a dead writer
        raise WriterBusy(self.path)

    def _release(self) -> None:
        with self._d._lock:
            if self._d._active.get(self.path) is self:
                del self._d._active[self.path]
        try:
            self._d.client.delete_object(Bucket=self._d.bucket, Key=self._stage + "lock")
        except ClientError:
            pass

    def _holds(self) -> bool:
        try:
            self._d.client.head_object(Bucket=self._d.bucket, Key=self._stage + "lock")
            return True
        except ClientError as exc:
            if _missing(exc):
                return False
            raise

    # -- helpers ---------------------------------------------------------------------

    def _get(self, key: str) -> bytes:
        return self._d.client.get_object(Bucket=self._d.bucket, Key=key)["Body"].read()

    def _put(self, key: str, data: bytes) -> None:
        self._d.client.put_object(Bucket=self._d.bucket, Key=key, Body=data)

    def _discard_staged(self) -> None:
        d = self._d
        d._abort_upload(self._stage + "state")
        keys = [self._stage + "state", self._stage + "tail"]
        d._delete_keys(keys)

    def _flushed(self) -> int:
        return sum(p[2] for p in self._parts)

    def _upload_part(self, data: bytes) -> None:
        d = self._d
        if self._upload_id is None:
            self._upload_id = d.client.create_multipart_upload(Bucket=d.bucket, Key=self._target)["UploadId"]
        n = len(self._parts) + 1
        etag = d.client.upload_part(
            Bucket=d.bucket, Key=self._target, UploadId=self._upload_id, PartNumber=n, Body=data
        )["ETag"]
        self._parts.append([n, etag, len(data)])
        self._put(self._stage + "lock", self._lock_body())  # refresh the lease

    # -- FileWriter ------------------------------------------------------------------

    @property
    def size(self) -> int:
        return self._flushed() + len(self._buf)

    @property
    def modified(self) -> float:
        return self._modified

    def write(self, data: bytes) -> int:
        if self._closed:
            raise ValueError("writer is closed")
        self._buf += data
        self._modified = time.time()
        while len(self._buf) >= PART_SIZE:
            if not self._holds():
                raise PathNotFound(self.path)  # deleted under us
            self._upload_part(bytes(self._buf[:PART_SIZE]))
            del self._buf[:PART_SIZE]
        return len(data)

    def truncate(self, size: int) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        if not 0 <= size <= self.size:
            raise ValueError("can only truncate to a size between 0 and the current size")
        flushed = self._flushed()
        if size >= flushed:
            del self._buf[size - flushed :]
        else:
            parts, tail = self._open
            if size != sum(p[2] for p in self._parts[:parts]) + len(tail):
                raise ValueError("staged parts already in the bucket can only be dropped back to where this writer began")
            self._parts = self._parts[:parts]
            self._buf = bytearray(tail)
        self._modified = time.time()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._holds():
                self._put(self._stage + "tail", bytes(self._buf))
                state = {"upload_id": self._upload_id, "key": self._target, "parts": self._parts,
                         "tail": len(self._buf), "modified": self._modified}
                self._put(self._stage + "state", json.dumps(state).encode())
        finally:
            self._release()

    def cancel(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            if self._upload_id:
                try:
                    self._d.client.abort_multipart_upload(
                        Bucket=self._d.bucket, Key=self._target, UploadId=self._upload_id
                    )
                except ClientError:
                    pass
            self._discard_staged()
        finally:
            self._release()

    def commit(self) -> None:
        if self._closed:
            raise ValueError("writer is closed")
        d = self._d
        if not self._holds():
            self._closed = True
            self.cancel_quietly()
            raise PathNotFound(self.path)
        try:
            if self._upload_id is None:
                d.client.put_object(Bucket=d.bucket, Key=self._target, Body=bytes(self._buf))
            else:
                if self._buf or not self._parts:
                    self._upload_part(bytes(self._buf))
                d.client.complete_multipart_upload(
                    Bucket=d.bucket, Key=self._target, UploadId=self._upload_id,
                    MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e, _ in self._parts]},
                )
                self._upload_id = None
            d._delete_keys([self._stage + "state", self._stage + "tail"])
        except BaseException:
            self._closed = False
            self.cancel()
            raise
        self._closed = True
        self._release()

    def cancel_quietly(self) -> None:
        with self._d._lock:
            if self._d._active.get(self.path) is self:
                del self._d._active[self.path]
        if self._upload_id:
            try:
                self._d.client.abort_multipart_upload(
                    Bucket=self._d.bucket, Key=self._target, UploadId=self._upload_id
                )
            except ClientError:
                pass
