"""S3 object storage through the ``minio`` client (pinned ``<8``), with an async facade.

Every object we write records its sha256 in its metadata (``x-amz-meta-sha256``), and every key
is checked by ``worldmill.contracts.keys.check_key`` first. Files are streamed (hashed in one
pass, uploaded in a second, multipart above ``part_size``), never read whole into memory.
Presigned URLs are signed offline with a client built for the public endpoint.

Every request has a connect and a read timeout and is retried a bounded number of times by
urllib3 (connection errors and 5xx; idempotent methods only, and our writes are idempotent: keys
are functions of ids, a retry writes the same bytes under the same key). What still fails is a
``StoreUnavailableError`` for the caller to wait out; ``outage`` logs each outage once, with its
duration when the store answers again (urllib3's own line per retry is silenced).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import urllib3
from minio import Minio
from minio.commonconfig import CopySource
from minio.error import InvalidResponseError, S3Error, ServerError

from worldmill.contracts.base import ObjectRef
from worldmill.contracts.keys import check_key
from worldmill.runtime.digest import sha256_file as sha256_file  # noqa: PLC0414 - re-exported for its callers
from worldmill.runtime.errors import (
    InvalidInputError,
    ObjectNotFoundError,
    PermanentError,
    StoreAuthError,
    StoreUnavailableError,
)
from worldmill.runtime.outage import Outage

SHA256_META = "sha256"
_CHUNK = 1024 * 1024
_AUTH_CODES = {"SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied", "InvalidToken", "ExpiredToken"}
_INPUT_CODES = {"InvalidBucketName", "InvalidArgument", "KeyTooLongError", "InvalidObjectName"}
_MISSING_CODES = {"NoSuchKey", "NoSuchBucket", "NoSuchObject"}


class LocalFileError(PermanentError):
    """A local file could not be written (not the store's fault; retrying will not help)."""


class IntegrityError(PermanentError):
    """Downloaded bytes do not match the sha256 recorded when they were stored."""


@dataclass(frozen=True)
class ObjectInfo:
    """What ``stat`` tells about an object."""

    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    sha256: str | None
    last_modified: datetime | None
    metadata: dict[str, str]


def _endpoint(url: str) -> tuple[str, bool]:
    parts = urlsplit(url if "://" in url else f"http://{url}")
    if not parts.hostname or parts.scheme not in ("http", "https"):
        raise PermanentError(f"s3_endpoint: {url!r} is not an http(s) URL with a host")
    host = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
    return host, parts.scheme == "https"


class _NoRetryLines(logging.Filter):
    """Drops urllib3's warning per retried request: an outage is logged once, by ``ObjectStore.outage``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Retrying (")


_RETRY_FILTER = _NoRetryLines()


class ObjectStore:
    """An S3 bucket store. Construction is cheap and does no I/O."""

    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        region: str = "us-east-1",
        public_endpoint: str | None = None,
        part_size: int = 64 * 1024 * 1024,
        timeout_s: float = 30.0,
        connect_timeout_s: float = 5.0,
        retries: int = 2,
    ) -> None:
        self.endpoint = endpoint
        self.access_key = access_key
        self.part_size = part_size
        self.outage = Outage("s3")
        host, secure = _endpoint(endpoint)
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=timeout_s),
            retries=urllib3.Retry(total=retries, backoff_factor=0.2, status_forcelist=(500, 502, 503, 504)),
            maxsize=16,
        )
        pool_log = logging.getLogger("urllib3.connectionpool")
        if _RETRY_FILTER not in pool_log.filters:
            pool_log.addFilter(_RETRY_FILTER)
        self._client = Minio(
            host, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        pub_host, pub_secure = _endpoint(public_endpoint or endpoint)
        # Signing is offline when the region is given; the host is part of the signature.
        self._signer = Minio(pub_host, access_key=access_key, secret_key=secret_key, secure=pub_secure, region=region)

    # -- errors ------------------------------------------------------------------------------

    def _translate(self, exc: Exception, what: str) -> Exception:
        if isinstance(exc, S3Error):
            if exc.code in _AUTH_CODES:
                return StoreAuthError(
                    f"S3 at {self.endpoint} refused {what}: {exc.code} — check the access key "
                    f"{self.access_key!r} and its secret (WM_S3_ACCESS_KEY / WM_S3_SECRET_KEY)"
                )
            if exc.code in _MISSING_CODES:
                return ObjectNotFoundError(f"{what}: {exc.code}")
            if exc.code in _INPUT_CODES:
                return InvalidInputError(what, f"{exc.code}: {exc.message}")
            return PermanentError(f"S3 at {self.endpoint}: {what} failed: {exc.code}: {exc.message}")
        if isinstance(exc, ServerError | InvalidResponseError):
            # A 5xx or a non-S3 answer (a proxy page, a half-started server): worth retrying.
            return StoreUnavailableError(f"S3 at {self.endpoint} answered badly ({what}): {exc}")
        if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
            return StoreUnavailableError(f"S3 at {self.endpoint} is unreachable ({what}): {exc}")
        if isinstance(exc, ValueError):
            # minio validates names client-side (e.g. a bucket name S3 does not allow).
            return InvalidInputError(what, str(exc))
        return exc

    async def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            result = await asyncio.to_thread(fn, *args, **kwargs)
        except (
            S3Error,
            ServerError,
            InvalidResponseError,
            urllib3.exceptions.HTTPError,
            OSError,
            ValueError,
        ) as exc:
            translated = self._translate(exc, what)
            if isinstance(translated, StoreUnavailableError):
                self.outage.failed(translated)
            else:  # an S3 answer (even a refusal) means the store is up
                self.outage.ok()
            raise translated from exc
        self.outage.ok()
        return result

    # -- buckets -----------------------------------------------------------------------------

    async def ensure_buckets(self, names: tuple[str, ...] | list[str]) -> None:
        """Create missing buckets. Idempotent."""
        for name in names:
            if not await self._call(f"bucket {name}", self._client.bucket_exists, name):
                try:
                    await self._call(f"make bucket {name}", self._client.make_bucket, name)
                except PermanentError as exc:
                    if "BucketAlreadyOwnedByYou" not in str(exc) and "BucketAlreadyExists" not in str(exc):
                        raise

    async def check(self) -> None:
        """Prove the store is reachable and accepts our signature (lists buckets)."""
        await self._call("list buckets", self._client.list_buckets)

    # -- writes ------------------------------------------------------------------------------

    async def put_bytes(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
    ) -> ObjectRef:
        """Store small data in one request."""
        check_key(key)
        digest = hashlib.sha256(data).hexdigest()
        meta = {**(metadata or {}), SHA256_META: digest}
        result = await self._call(
            f"put s3://{bucket}/{key}",
            self._client.put_object,
            bucket,
            key,
            io.BytesIO(data),
            len(data),
            content_type=content_type,
            metadata=meta,
        )
        return ObjectRef(
            bucket=bucket, key=key, size=len(data), sha256=digest, content_type=content_type, etag=result.etag
        )

    async def put_file(
        self,
        bucket: str,
        key: str,
        path: Path,
        *,
        content_type: str = "application/octet-stream",
        metadata: dict[str, str] | None = None,
        sha256: str | None = None,
    ) -> ObjectRef:
        """Stream a file up (multipart above ``part_size``), recording its sha256."""
        check_key(key)
        if sha256 is None:
            sha256, size = await asyncio.to_thread(sha256_file, path)
        else:
            size = (await asyncio.to_thread(path.stat)).st_size
        meta = {**(metadata or {}), SHA256_META: sha256}
        result = await self._call(
            f"put s3://{bucket}/{key}",
            self._client.fput_object,
            bucket,
            key,
            str(path),
            content_type=content_type,
            metadata=meta,
            part_size=max(self.part_size, 5 * 1024 * 1024),
            # minio's default of 3 parallel part uploads keeps ~5 parts in memory at once (more than
            # a whole 4-part file); one at a time bounds memory to about two parts.
            num_parallel_uploads=1,
        )
        return ObjectRef(bucket=bucket, key=key, size=size, sha256=sha256, content_type=content_type, etag=result.etag)

    async def copy(self, source: ObjectRef, bucket: str, key: str) -> ObjectRef:
        """Copy an object inside the store (server side; its metadata, sha256 included, goes along)."""
        check_key(key)
        result = await self._call(
            f"copy {source.uri()} to s3://{bucket}/{key}",
            self._client.copy_object,
            bucket,
            key,
            CopySource(source.bucket, source.key),
        )
        return source.model_copy(update={"bucket": bucket, "key": key, "etag": result.etag})

    # -- reads -------------------------------------------------------------------------------

    async def stat(self, bucket: str, key: str) -> ObjectInfo:
        """Size, etag, content type, recorded sha256 and metadata of an object."""
        check_key(key)
        st = await self._call(f"stat s3://{bucket}/{key}", self._client.stat_object, bucket, key)
        meta = {
            k.lower().removeprefix("x-amz-meta-"): v
            for k, v in (st.metadata or {}).items()
            if k.lower().startswith("x-amz-meta-")
        }
        return ObjectInfo(
            bucket=bucket,
            key=key,
            size=st.size or 0,
            etag=(st.etag or "").strip('"'),
            content_type=st.content_type or "application/octet-stream",
            sha256=meta.get(SHA256_META),
            last_modified=st.last_modified,
            metadata=meta,
        )

    async def exists(self, bucket: str, key: str) -> bool:
        """True when the object exists."""
        try:
            await self.stat(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    async def get_bytes(self, bucket: str, key: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """A small object's bytes (refuses objects over ``max_bytes``; use ``download`` for those)."""
        info = await self.stat(bucket, key)
        if info.size > max_bytes:
            raise PermanentError(f"s3://{bucket}/{key}: {info.size} bytes is over {max_bytes}; download it")

        def read() -> bytes:
            resp = self._client.get_object(bucket, key)
            try:
                return bytes(resp.read())
            finally:
                resp.close()
                resp.release_conn()

        data: bytes = await self._call(f"get s3://{bucket}/{key}", read)
        if info.sha256 and hashlib.sha256(data).hexdigest() != info.sha256:
            raise IntegrityError(f"s3://{bucket}/{key}: content does not match its recorded sha256")
        return data

    async def download(self, bucket: str, key: str, dest: Path) -> ObjectInfo:
        """Stream an object to ``dest`` (written atomically), checking its recorded sha256."""
        info = await self.stat(bucket, key)
        tmp = dest.with_name(f".{dest.name}.part")

        def fetch() -> str:
            digest = hashlib.sha256()
            resp = self._client.get_object(bucket, key)
            try:
                try:
                    fh = tmp.open("wb")
                except OSError as exc:
                    raise LocalFileError(f"cannot write {dest}: {exc}") from exc
                with fh:
                    for chunk in resp.stream(_CHUNK):
                        digest.update(chunk)
                        try:
                            fh.write(chunk)
                        except OSError as exc:
                            raise LocalFileError(f"cannot write {dest}: {exc}") from exc
            finally:
                resp.close()
                resp.release_conn()
            return digest.hexdigest()

        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LocalFileError(f"cannot write {dest}: {exc}") from exc
        try:
            got = await self._call(f"get s3://{bucket}/{key}", fetch)
            if info.sha256 and got != info.sha256:
                raise IntegrityError(f"s3://{bucket}/{key}: downloaded bytes do not match the recorded sha256")
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)
        return info

    async def list(self, bucket: str, prefix: str = "", *, start_after: str | None = None) -> list[ObjectInfo]:
        """Objects under ``prefix`` in key order (recursive), after ``start_after`` if given."""

        def collect() -> list[ObjectInfo]:
            out: list[ObjectInfo] = []
            for obj in self._iter(bucket, prefix, start_after):
                out.append(
                    ObjectInfo(
                        bucket=bucket,
                        key=obj.object_name or "",
                        size=obj.size or 0,
                        etag=(obj.etag or "").strip('"'),
                        content_type="",
                        sha256=None,
                        last_modified=obj.last_modified,
                        metadata={},
                    )
                )
            return out

        result: list[ObjectInfo] = await self._call(f"list s3://{bucket}/{prefix}", collect)
        return result

    def _iter(self, bucket: str, prefix: str, start_after: str | None) -> Iterator[Any]:
        return iter(self._client.list_objects(bucket, prefix=prefix or None, recursive=True, start_after=start_after))

    async def delete(self, bucket: str, key: str) -> None:
        """Remove an object (no error if it is already gone)."""
        check_key(key)
        await self._call(f"delete s3://{bucket}/{key}", self._client.remove_object, bucket, key)

    def presigned_url(self, bucket: str, key: str, *, expires: timedelta = timedelta(hours=24)) -> str:
        """A GET URL anyone can use until it expires (signed offline for the public endpoint)."""
        check_key(key)
        return str(self._signer.presigned_get_object(bucket, key, expires=expires))
