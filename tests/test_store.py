"""ObjectStore against a real SeaweedFS S3 gateway that checks signatures (no mocks)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import pytest

from worldmill.contracts.keys import InvalidKeyError
from worldmill.runtime.errors import (
    ObjectNotFoundError,
    PermanentError,
    StoreAuthError,
    StoreUnavailableError,
    TransientError,
)
from worldmill.runtime.servers import S3Endpoint, free_port
from worldmill.runtime.store import IntegrityError, ObjectStore, sha256_file

MiB = 1024 * 1024


def _bucket(store: ObjectStore) -> str:
    return str(store.test_bucket)  # type: ignore[attr-defined]


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _tamper_signature(url: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    out = []
    for name, value in query:
        if name == "X-Amz-Signature":
            out.append((name, ("0" if value[0] != "0" else "1") + value[1:]))
        else:
            out.append((name, value))
    tampered = urlunsplit(parts._replace(query=urlencode(out)))
    assert tampered != url
    return tampered


# -- 1. put_bytes / get_bytes / stat ---------------------------------------------------------


async def test_put_bytes_records_sha256_and_stat_reports_it(store: ObjectStore) -> None:
    """put_bytes records sha256 in metadata and ObjectRef; stat gives size, etag, type, sha256, metadata."""
    bucket = _bucket(store)
    data = b"hello worldmill\n" * 100
    ref = await store.put_bytes(
        bucket, "a/b/hello.txt", data, content_type="text/plain", metadata={"run-id": "r-123", "attempt": "2"}
    )
    assert ref.sha256 == _sha(data)
    assert ref.size == len(data)
    assert ref.bucket == bucket and ref.key == "a/b/hello.txt"
    assert ref.content_type == "text/plain"
    assert ref.etag and '"' not in ref.etag

    info = await store.stat(bucket, "a/b/hello.txt")
    assert info.size == len(data)
    assert info.etag == ref.etag
    assert info.content_type == "text/plain"
    assert info.sha256 == _sha(data)
    assert info.metadata.get("run-id") == "r-123"
    assert info.metadata.get("attempt") == "2"

    assert await store.get_bytes(bucket, "a/b/hello.txt") == data


async def test_put_bytes_empty_object_round_trips(store: ObjectStore) -> None:
    """An empty object round-trips with the sha256 of empty input and size 0."""
    bucket = _bucket(store)
    ref = await store.put_bytes(bucket, "empty.bin", b"")
    assert ref.sha256 == _sha(b"") and ref.size == 0
    info = await store.stat(bucket, "empty.bin")
    assert info.size == 0 and info.sha256 == _sha(b"")
    assert await store.get_bytes(bucket, "empty.bin") == b""


# -- 2. put_file multipart + download -------------------------------------------------------


async def test_put_file_multipart_and_download_round_trip(store: ObjectStore, tmp_path: Path) -> None:
    """A 12 MiB file uploads as 3 multipart parts and downloads back byte-identical, leaving no .part file."""
    bucket = _bucket(store)
    src = tmp_path / "big.bin"
    payload = os.urandom(12 * MiB + 12345)
    src.write_bytes(payload)
    expected = _sha(payload)

    ref = await store.put_file(bucket, "videos/big.bin", src, content_type="video/mp4")
    assert ref.sha256 == expected
    assert ref.size == len(payload)
    assert ref.etag is not None and ref.etag.endswith("-3"), ref.etag

    info = await store.stat(bucket, "videos/big.bin")
    assert info.size == len(payload)
    assert info.sha256 == expected
    assert info.content_type == "video/mp4"
    assert info.etag.endswith("-3")

    dest = tmp_path / "out" / "big-copy.bin"
    got = await store.download(bucket, "videos/big.bin", dest)
    assert got.sha256 == expected
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == expected
    assert not (dest.parent / f".{dest.name}.part").exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["big-copy.bin"]


async def test_put_file_with_given_sha256_trusts_it(store: ObjectStore, tmp_path: Path) -> None:
    """put_file with a caller-given sha256 records that value and the real size."""
    bucket = _bucket(store)
    src = tmp_path / "small.bin"
    src.write_bytes(b"x" * 1000)
    ref = await store.put_file(bucket, "small.bin", src, sha256=_sha(b"x" * 1000))
    assert ref.size == 1000 and ref.sha256 == _sha(b"x" * 1000)
    assert "-" not in (ref.etag or "")
    assert (await store.stat(bucket, "small.bin")).sha256 == ref.sha256


# -- 3. corruption ---------------------------------------------------------------------------


async def test_download_detects_corruption_and_leaves_no_file(store: ObjectStore, tmp_path: Path) -> None:
    """download raises IntegrityError when bytes differ from the recorded sha256, leaving no dest or .part."""
    bucket = _bucket(store)
    original = b"the real content" * 1000
    await store.put_bytes(bucket, "c/obj.bin", original)
    corrupt = b"THE REAL CONTENT" * 1000
    await asyncio.to_thread(
        store._client.put_object,
        bucket,
        "c/obj.bin",
        io.BytesIO(corrupt),
        len(corrupt),
        metadata={"sha256": _sha(original)},
    )
    assert (await store.stat(bucket, "c/obj.bin")).sha256 == _sha(original)

    dest = tmp_path / "dl" / "obj.bin"
    with pytest.raises(IntegrityError):
        await store.download(bucket, "c/obj.bin", dest)
    assert not dest.exists()
    assert not (dest.parent / f".{dest.name}.part").exists()


async def test_get_bytes_detects_corruption(store: ObjectStore) -> None:
    """get_bytes raises IntegrityError (a PermanentError) when bytes differ from the recorded sha256."""
    bucket = _bucket(store)
    original = b"abc" * 333
    await store.put_bytes(bucket, "c/small.bin", original)
    corrupt = b"abd" * 333
    await asyncio.to_thread(
        store._client.put_object,
        bucket,
        "c/small.bin",
        io.BytesIO(corrupt),
        len(corrupt),
        metadata={"sha256": _sha(original)},
    )
    with pytest.raises(IntegrityError) as err:
        await store.get_bytes(bucket, "c/small.bin")
    assert isinstance(err.value, PermanentError)
    assert "sha256" in str(err.value)


async def test_download_keeps_previous_dest_on_corruption(store: ObjectStore, tmp_path: Path) -> None:
    """A failed integrity check leaves an existing dest file untouched."""
    bucket = _bucket(store)
    await store.put_bytes(bucket, "c/keep.bin", b"good")
    await asyncio.to_thread(
        store._client.put_object, bucket, "c/keep.bin", io.BytesIO(b"evil"), 4, metadata={"sha256": _sha(b"good")}
    )
    dest = tmp_path / "keep.bin"
    dest.write_bytes(b"previous")
    with pytest.raises(IntegrityError):
        await store.download(bucket, "c/keep.bin", dest)
    assert dest.read_bytes() == b"previous"


# -- 4. presigned URLs ----------------------------------------------------------------------


async def test_presigned_url_serves_exact_bytes(store: ObjectStore) -> None:
    """A presigned GET URL returns 200 with exactly the stored bytes."""
    bucket = _bucket(store)
    data = os.urandom(70_000)
    await store.put_bytes(bucket, "p/file name+x.bin", data)
    url = store.presigned_url(bucket, "p/file name+x.bin", expires=timedelta(minutes=5))
    async with httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 200, resp.text
    assert resp.content == data


async def test_presigned_url_with_tampered_signature_is_refused(store: ObjectStore) -> None:
    """A presigned URL whose signature was changed by one character is refused with 403."""
    bucket = _bucket(store)
    await store.put_bytes(bucket, "p/secret.bin", b"secret")
    url = store.presigned_url(bucket, "p/secret.bin", expires=timedelta(minutes=5))
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).status_code == 200
        resp = await client.get(_tamper_signature(url))
    assert resp.status_code == 403
    assert resp.content != b"secret"


async def test_presigned_url_expires(store: ObjectStore) -> None:
    """A presigned URL with a one-second lifetime is refused with 403 two seconds later."""
    bucket = _bucket(store)
    await store.put_bytes(bucket, "p/short.bin", b"short-lived")
    url = store.presigned_url(bucket, "p/short.bin", expires=timedelta(seconds=1))
    await asyncio.sleep(2.1)
    async with httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 403, resp.status_code
    assert resp.content != b"short-lived"


async def test_presigned_url_for_public_endpoint_signs_that_host(s3: S3Endpoint, store: ObjectStore) -> None:
    """With public_endpoint set, the URL points at that host, and it works when it is the same server."""
    bucket = _bucket(store)
    await store.put_bytes(bucket, "p/pub.bin", b"public")
    port = urlsplit(s3.url).port
    public = f"http://localhost:{port}"
    pub_store = ObjectStore(s3.url, s3.access_key, s3.secret_key, public_endpoint=public)
    url = pub_store.presigned_url(bucket, "p/pub.bin", expires=timedelta(minutes=5))
    assert url.startswith(f"{public}/")
    async with httpx.AsyncClient() as client:
        resp = await client.get(url)
    assert resp.status_code == 200 and resp.content == b"public"


# -- 5. bad keys -----------------------------------------------------------------------------

BAD_KEYS = ["../escape.bin", "a/../b.bin", "/abs/key.bin", "line\nbreak.bin", "nul\x00byte.bin", "a//b.bin", ""]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_bad_keys_are_refused_before_any_request(store: ObjectStore, tmp_path: Path, key: str) -> None:
    """Unsafe keys raise InvalidKeyError from every entry point and nothing is written to the bucket."""
    bucket = _bucket(store)
    src = tmp_path / "f.bin"
    src.write_bytes(b"data")
    with pytest.raises(InvalidKeyError):
        await store.put_bytes(bucket, key, b"data")
    with pytest.raises(InvalidKeyError):
        await store.put_file(bucket, key, src)
    with pytest.raises(InvalidKeyError):
        await store.stat(bucket, key)
    with pytest.raises(InvalidKeyError):
        await store.get_bytes(bucket, key)
    with pytest.raises(InvalidKeyError):
        await store.download(bucket, key, tmp_path / "out.bin")
    with pytest.raises(InvalidKeyError):
        await store.exists(bucket, key)
    with pytest.raises(InvalidKeyError):
        await store.delete(bucket, key)
    with pytest.raises(InvalidKeyError):
        store.presigned_url(bucket, key)
    assert await store.list(bucket) == []
    assert not (tmp_path / "out.bin").exists()


async def test_bad_keys_refused_even_with_unreachable_endpoint() -> None:
    """Key checks precede any I/O: a store at a closed port raises InvalidKeyError, not unavailable."""
    st = ObjectStore(f"http://127.0.0.1:{free_port()}", "ak", "sk")
    with pytest.raises(InvalidKeyError):
        await st.put_bytes("wm-inputs", "../x", b"")
    with pytest.raises(InvalidKeyError):
        await st.stat("wm-inputs", "/x")


# -- 6. wrong credentials --------------------------------------------------------------------


async def test_wrong_secret_raises_store_auth_error_naming_endpoint_code_and_key(
    s3: S3Endpoint,
    store: ObjectStore,
) -> None:
    """A wrong secret gives StoreAuthError naming the endpoint, SignatureDoesNotMatch and the access key."""
    bucket = _bucket(store)
    bad = ObjectStore(s3.url, s3.access_key, s3.secret_key + "x")
    with pytest.raises(StoreAuthError) as err:
        await bad.put_bytes(bucket, "auth/x.bin", b"nope")
    msg = str(err.value)
    assert s3.url in msg
    assert "SignatureDoesNotMatch" in msg
    assert repr(s3.access_key) in msg
    assert not isinstance(err.value, TransientError)
    assert await store.list(bucket) == []


async def test_wrong_secret_check_raises_store_auth_error(s3: S3Endpoint) -> None:
    """check() with a wrong secret raises StoreAuthError naming endpoint, code and access key."""
    bad = ObjectStore(s3.url, s3.access_key, s3.secret_key[::-1] + "zz")
    with pytest.raises(StoreAuthError) as err:
        await bad.check()
    msg = str(err.value)
    assert s3.url in msg and "SignatureDoesNotMatch" in msg and repr(s3.access_key) in msg


async def test_wrong_secret_stat_raises_store_auth_error(s3: S3Endpoint, store: ObjectStore) -> None:
    """stat (a bodiless HEAD) with a wrong secret still raises StoreAuthError, not not-found."""
    bucket = _bucket(store)
    await store.put_bytes(bucket, "auth/here.bin", b"here")
    bad = ObjectStore(s3.url, s3.access_key, s3.secret_key + "x")
    with pytest.raises(StoreAuthError) as err:
        await bad.stat(bucket, "auth/here.bin")
    assert s3.url in str(err.value) and repr(s3.access_key) in str(err.value)


async def test_unknown_access_key_raises_store_auth_error(s3: S3Endpoint) -> None:
    """An unknown access key raises StoreAuthError from check()."""
    bad = ObjectStore(s3.url, "nosuchuser", s3.secret_key)
    with pytest.raises(StoreAuthError) as err:
        await bad.check()
    assert "'nosuchuser'" in str(err.value)


async def test_right_credentials_check_passes(store: ObjectStore) -> None:
    """check() succeeds with the right credentials."""
    await store.check()


# -- 7. missing objects ----------------------------------------------------------------------


async def test_missing_object_is_not_found_and_exists_tracks_it(store: ObjectStore, tmp_path: Path) -> None:
    """stat, get_bytes and download of an absent key raise ObjectNotFoundError; exists() tracks presence."""
    bucket = _bucket(store)
    with pytest.raises(ObjectNotFoundError):
        await store.stat(bucket, "missing/x.bin")
    with pytest.raises(ObjectNotFoundError):
        await store.get_bytes(bucket, "missing/x.bin")
    with pytest.raises(ObjectNotFoundError):
        await store.download(bucket, "missing/x.bin", tmp_path / "x.bin")
    assert not (tmp_path / "x.bin").exists()
    assert await store.exists(bucket, "missing/x.bin") is False

    await store.put_bytes(bucket, "missing/x.bin", b"now here")
    assert await store.exists(bucket, "missing/x.bin") is True

    await store.delete(bucket, "missing/x.bin")
    assert await store.exists(bucket, "missing/x.bin") is False
    await store.delete(bucket, "missing/x.bin")  # already gone: no error


async def test_missing_bucket_raises_not_found(store: ObjectStore) -> None:
    """stat in a bucket that does not exist raises ObjectNotFoundError and exists() is False."""
    with pytest.raises(ObjectNotFoundError):
        await store.stat("t-no-such-bucket-here", "x.bin")
    assert await store.exists("t-no-such-bucket-here", "x.bin") is False


# -- 8. unreachable endpoint -----------------------------------------------------------------


async def test_unreachable_endpoint_raises_store_unavailable_quickly() -> None:
    """A closed port gives StoreUnavailableError (a TransientError) within seconds for check, stat, put."""
    endpoint = f"http://127.0.0.1:{free_port()}"
    st = ObjectStore(endpoint, "ak", "sk", timeout_s=5.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as err:
        await st.check()
    assert isinstance(err.value, TransientError)
    assert endpoint in str(err.value)
    with pytest.raises(StoreUnavailableError):
        await st.stat("wm-inputs", "x.bin")
    with pytest.raises(StoreUnavailableError):
        await st.put_bytes("wm-inputs", "x.bin", b"x")
    assert time.monotonic() - started < 15.0


def test_non_http_endpoint_is_refused_at_construction() -> None:
    """An endpoint that is not an http(s) URL with a host is a PermanentError at construction."""
    with pytest.raises(PermanentError):
        ObjectStore("ftp://example.com", "ak", "sk")


# -- 9. buckets and listing ------------------------------------------------------------------


async def test_ensure_buckets_is_idempotent(store: ObjectStore) -> None:
    """ensure_buckets twice on new and existing buckets raises nothing and the buckets are usable."""
    fresh = f"{_bucket(store)}-x"
    await store.ensure_buckets([_bucket(store), fresh])
    await store.ensure_buckets((_bucket(store), fresh))
    await store.put_bytes(fresh, "k.bin", b"k")
    assert [o.key for o in await store.list(fresh)] == ["k.bin"]


async def test_list_orders_filters_by_prefix_and_resumes_after(store: ObjectStore) -> None:
    """list returns keys in order, filters by prefix recursively; start_after resumes strictly after a key."""
    bucket = _bucket(store)
    keys = ["in/b/2.mp4", "in/a/1.mp4", "in/a/0.mp4", "in/c.mp4", "other/z.mp4", "inx.mp4"]
    for i, key in enumerate(keys):
        await store.put_bytes(bucket, key, b"x" * (i + 1))

    everything = await store.list(bucket)
    assert [o.key for o in everything] == sorted(keys)
    sizes = {o.key: o.size for o in everything}
    assert sizes["in/b/2.mp4"] == 1 and sizes["inx.mp4"] == 6
    assert all(o.etag and '"' not in o.etag for o in everything)

    under_in = [o.key for o in await store.list(bucket, "in/")]
    assert under_in == ["in/a/0.mp4", "in/a/1.mp4", "in/b/2.mp4", "in/c.mp4"]

    after = [o.key for o in await store.list(bucket, "in/", start_after="in/a/1.mp4")]
    assert after == ["in/b/2.mp4", "in/c.mp4"]

    # start_after need not be an existing key
    after2 = [o.key for o in await store.list(bucket, "in/", start_after="in/a/0.mp4x")]
    assert after2 == ["in/a/1.mp4", "in/b/2.mp4", "in/c.mp4"]

    assert await store.list(bucket, "in/", start_after="in/c.mp4") == []
    assert [o.key for o in await store.list(bucket, start_after="inx.mp4")] == ["other/z.mp4"]


async def test_list_pages_past_a_thousand_keys_with_start_after(store: ObjectStore) -> None:
    """list follows pagination past 1000 keys in order, and start_after resumes mid-way."""
    bucket = _bucket(store)
    keys = [f"many/{i:05d}.bin" for i in range(1100)]
    sem = asyncio.Semaphore(16)

    async def put(key: str) -> None:
        async with sem:
            await store.put_bytes(bucket, key, b"")

    await asyncio.gather(*(put(k) for k in keys))
    listed = [o.key for o in await store.list(bucket, "many/")]
    assert listed == keys
    resumed = [o.key for o in await store.list(bucket, "many/", start_after=keys[999])]
    assert resumed == keys[1000:]


async def test_list_of_missing_bucket_raises_not_found(store: ObjectStore) -> None:
    """Listing a bucket that does not exist raises ObjectNotFoundError."""
    with pytest.raises(ObjectNotFoundError):
        await store.list("t-no-such-bucket-here")


# -- 10. get_bytes size limit ----------------------------------------------------------------


async def test_get_bytes_refuses_objects_over_max_bytes(store: ObjectStore) -> None:
    """get_bytes refuses an object over max_bytes with a PermanentError that says to download it."""
    bucket = _bucket(store)
    await store.put_bytes(bucket, "big/x.bin", b"y" * 2000)
    with pytest.raises(PermanentError) as err:
        await store.get_bytes(bucket, "big/x.bin", max_bytes=1999)
    assert "download" in str(err.value)
    assert "2000" in str(err.value)
    assert await store.get_bytes(bucket, "big/x.bin", max_bytes=2000) == b"y" * 2000


# -- 11. streaming memory --------------------------------------------------------------------


async def test_put_file_streams_without_reading_whole_file(store: ObjectStore, tmp_path: Path) -> None:
    """Uploading a 40 MiB file keeps peak traced Python memory well below the file size."""
    bucket = _bucket(store)
    src = tmp_path / "sparse.bin"
    size = 40 * MiB
    with src.open("wb") as fh:
        fh.truncate(size)
        for offset in range(0, size, 4 * MiB):
            fh.seek(offset)
            fh.write(os.urandom(4096))
    expected, _ = sha256_file(src)

    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        ref = await store.put_file(bucket, "mem/sparse.bin", src)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ref.size == size and ref.sha256 == expected
    assert ref.etag is not None and ref.etag.endswith("-8")
    assert peak < 16 * MiB, f"peak traced memory {peak / MiB:.1f} MiB"
    info = await store.stat(bucket, "mem/sparse.bin")
    assert info.size == size and info.sha256 == expected


async def test_download_to_an_unwritable_place_is_a_local_error_not_a_store_outage(
    store: ObjectStore, tmp_path: Path
) -> None:
    """A destination that cannot be written raises LocalFileError (permanent), naming the path."""
    from worldmill.runtime.store import LocalFileError  # noqa: PLC0415

    bucket = _bucket(store)
    await store.put_bytes(bucket, "d/x.bin", b"abc")
    blocker = tmp_path / "file"
    blocker.write_text("I am a file, not a folder")
    with pytest.raises(LocalFileError, match="cannot write"):
        await store.download(bucket, "d/x.bin", blocker / "x.bin")


async def test_a_bucket_name_s3_forbids_is_bad_input(store: ObjectStore) -> None:
    """minio's client-side name check surfaces as InvalidInputError, not as a retryable outage."""
    from worldmill.runtime.errors import InvalidInputError  # noqa: PLC0415

    with pytest.raises(InvalidInputError):
        await store.put_bytes("Bad_Bucket", "k", b"x")
