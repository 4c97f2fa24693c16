"""Model versions in S3-compatible object storage (MinIO, Ceph, SeaweedFS, AWS S3): the files of
a sealed version folder, and ``version.json`` (lineage, params, metrics and every file's sha256).

Layout: ``s3://BUCKET/PREFIX/<name>/v<version>/<files>``, ``version.json`` written last, so a
version whose upload was cut short has none and is neither listed nor pulled. Versions are
immutable: pushing a version that is already there with other files is refused.

Where and who: boto3's own settings. The endpoint of a self-hosted store is
``AWS_ENDPOINT_URL_S3`` (or ``AWS_ENDPOINT_URL``); credentials come from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``~/.aws`` or an instance role. aimass stores none of them.

A push sends the sealed set only (the files ``SHA256SUMS`` lists, and ``SHA256SUMS``): what the
folder gained later, as the ONNX runtime's cache of a served version, stays here. Objects under
the version's prefix that its ``version.json`` does not list (left by a push cut short) are
deleted before ``version.json`` is written, so a second push repairs the first.

A pull checks before it writes (names inside the version, no ``..``; the ``version.json``'s name
and number against the URL's ``NAME/vN``; no pickle-type file such as ``*.bin`` or ``*.pkl``, which
runs code when loaded; at most ``AIMASS_MAX_PULL_FILES`` files, 10,000, and the total against
``AIMASS_MAX_PULL_BYTES``, 20 GiB) and after (every file's sha256 against ``version.json``; a file
that is not listed there is refused), into a staging folder the caller registers or removes.

>>> parse_url("s3://models/team-a/reviews/v3")
('models', 'team-a/reviews/v3')
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from aimass.data.archive import safe_parts
from aimass.data.limits import limit, mebibytes
from aimass.errors import AimassError, ConfigError, DataError, IntegrityError, NotFoundError, TooLargeError
from aimass.store.artifacts import SUMS, read_sums, sha256_file

META = "version.json"
MAX_META_BYTES = 1 << 20
MAX_PULL_BYTES = 20 * 1024**3
PULL_ENV = "AIMASS_MAX_PULL_BYTES"
MAX_PULL_FILES = 10_000  # a model has a dozen files; a vector store one per document
FILES_ENV = "AIMASS_MAX_PULL_FILES"
# formats that run code when loaded (pickle and what wraps it): a version is safetensors and JSON
PICKLED = (".bin", ".pkl", ".pickle", ".pt", ".pth", ".ckpt", ".joblib")
_VERSION = re.compile(r"v(\d+)")


class RemoteError(AimassError):
    """The object store cannot be reached, or refused the request (credentials, bucket, network)."""

    code = "remote_error"
    http_status = 502


def parse_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``; a ConfigError otherwise."""
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(/.*)?", str(url).rstrip("/"))
    if not match:
        raise ConfigError(
            f"{url!r} is not an s3:// URL",
            hint="Give the store as s3://BUCKET or s3://BUCKET/PREFIX (the endpoint of a self-hosted "
            "store goes in AWS_ENDPOINT_URL_S3).",
        )
    prefix = (match.group(2) or "").strip("/")
    if prefix:
        safe_parts(prefix)  # no '..' or empty components in a key prefix
    return match.group(1), prefix


def client():
    """A boto3 S3 client configured from the environment (endpoint, credentials, region)."""
    try:
        import boto3
        from botocore.config import Config
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "pushing and pulling models needs boto3", hint="pip install 'aimass[s3]' (boto3)."
        ) from exc
    return boto3.client("s3", config=Config(retries={"max_attempts": 3, "mode": "standard"}))


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)


def version_key(prefix: str, name: str, version: int) -> str:
    return _join(prefix, name, f"v{version}")


def _call(what: str, url: str, fn, *args, **kwargs):
    """Run a boto3 call; its failures become RemoteError/NotFoundError that say what to check."""
    from boto3.exceptions import Boto3Error  # S3UploadFailedError wraps what failed in an upload
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

    try:
        return fn(*args, **kwargs)
    except NoCredentialsError as exc:
        raise RemoteError(
            f"{what} {url}: no credentials", hint="Set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        ) from exc
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("NoSuchBucket", "NoSuchKey", "404"):
            raise NotFoundError(f"{what} {url}: {code}", hint="Check the bucket and path.") from exc
        raise RemoteError(
            f"{what} {url}: {code or exc}",
            hint="Check the credentials and that they may read and write this bucket.",
        ) from exc
    except (BotoCoreError, Boto3Error) as exc:
        raise RemoteError(
            f"{what} {url}: {exc}", hint="Check AWS_ENDPOINT_URL_S3 and that the store is reachable."
        ) from exc


def _objects(s3, bucket: str, prefix: str, url: str) -> list[dict]:
    """Every object under ``prefix/`` (key and size)."""
    found, token = [], None
    while True:
        extra = {"ContinuationToken": token} if token else {}
        below = f"{prefix}/" if prefix else ""  # the bucket's root: every key
        page = _call("listing", url, s3.list_objects_v2, Bucket=bucket, Prefix=below, **extra)
        found += [{"key": o["Key"], "size": o["Size"]} for o in page.get("Contents", [])]
        if not page.get("IsTruncated"):
            return found
        token = page["NextContinuationToken"]


def read_meta(s3, bucket: str, key: str, url: str) -> dict | None:
    """A version's ``version.json``, or None when it has none (absent or cut short)."""
    from botocore.exceptions import ClientError

    try:
        head = s3.head_object(Bucket=bucket, Key=_join(key, META))
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise RemoteError(f"reading {url}: {exc}", hint="Check the credentials and the bucket.") from exc
    if head["ContentLength"] > MAX_META_BYTES:
        raise TooLargeError(f"{url}/{META} is {mebibytes(head['ContentLength'])}", where=url)
    # the GET may send more than the HEAD said: read no more than the bound either way
    body = _call("reading", url, s3.get_object, Bucket=bucket, Key=_join(key, META))["Body"]
    body = _call("reading", url, body.read, MAX_META_BYTES + 1)
    if len(body) > MAX_META_BYTES:
        raise TooLargeError(f"{url}/{META} is over {mebibytes(MAX_META_BYTES)}", where=url)
    try:
        meta = json.loads(body)
    except ValueError as exc:
        raise IntegrityError(f"{url}/{META} is not JSON", hint="Push the version again.") from exc
    if not isinstance(meta, dict):
        raise IntegrityError(f"{url}/{META} is not an object", hint="Push the version again.")
    shapes = {"files": dict, "task": str, "name": str, "metrics": dict, "parent": (str, type(None))}
    wrong = [key for key, kind in shapes.items() if not isinstance(meta.get(key), kind)]
    if wrong or not all(isinstance(v, str) for v in meta["files"].values()):
        where = ", ".join(wrong) or "files"
        raise IntegrityError(f"{url}/{META} is malformed ({where})", hint="Push the version again.")
    return meta


def push_folder(folder: Path, url: str, name: str, version: int, meta: dict) -> dict:
    """Upload a sealed version folder, just verified by the caller, and then its ``version.json``;
    returns ``{"url", "files", "bytes", "unchanged"}``. A version already there with the same files
    is left as it is. The sha256 of a file its ``SHA256SUMS`` lists is taken from there, not
    computed a second time."""
    bucket, prefix = parse_url(url)
    key = version_key(prefix, name, version)
    where = f"s3://{bucket}/{key}"
    files = sealed_files(folder)
    listed = read_sums(folder)
    sums = {rel: listed.get(rel) or sha256_file(path) for rel, path in files.items()}
    s3 = client()
    existing = read_meta(s3, bucket, key, where)
    stored = {o["key"][len(key) + 1 :] for o in _objects(s3, bucket, key, where)} - {META}
    if existing is not None:
        if existing["files"] != sums:
            raise ConfigError(
                f"{where} already holds another {name}:{version}",
                hint="Versions are immutable: push to another prefix, or delete that one in the store first.",
            )
        if stored == set(sums):
            return {"url": where, "files": len(files), "bytes": 0, "unchanged": True}
    sent = 0
    for rel, path in files.items():
        _call("uploading to", where, s3.upload_file, str(path), bucket, _join(key, rel))
        sent += path.stat().st_size
    for rel in sorted(stored - set(sums)):  # left by a push cut short: a pull would refuse them
        _call("deleting from", where, s3.delete_object, Bucket=bucket, Key=_join(key, rel))
    body = json.dumps({**meta, "files": sums}, indent=2, sort_keys=True).encode()
    _call("uploading to", where, s3.put_object, Bucket=bucket, Key=_join(key, META), Body=body)
    return {"url": where, "files": len(files), "bytes": sent, "unchanged": False}


def sealed_files(folder: Path) -> dict[str, Path]:
    """``{relative path: path}`` of what ``SHA256SUMS`` lists, and ``SHA256SUMS`` itself: the
    version as the registry sealed it, not what was added to its folder since (a runtime's cache).
    """
    listed = read_sums(folder)
    if not listed:
        raise IntegrityError(
            f"{folder} is not a sealed version folder (no {SUMS})",
            hint="Seal it again: push_model seals a version from before folders were sealed.",
        )
    files = {rel: folder.joinpath(*rel.split("/")) for rel in sorted(listed)}
    missing = [rel for rel, path in files.items() if not path.is_file()]
    if missing:
        raise IntegrityError(
            f"{folder} lacks files its {SUMS} lists: {missing[:3]}",
            hint="Restore the folder from a backup or train the version again.",
        )
    return {**files, SUMS: folder / SUMS}


def remote_versions(url: str, name: str | None = None, s3=None) -> list[dict]:
    """Complete versions under ``url`` (of ``name``, or every name): name, version, task, metrics.
    ``s3``: a client to reuse (building one costs more than a small request)."""
    bucket, prefix = parse_url(url)
    s3 = s3 or client()
    found = []
    for obj in _objects(s3, bucket, _join(prefix, name) if name else prefix, url):
        rel = obj["key"][len(prefix) :].strip("/").split("/") if prefix else obj["key"].split("/")
        if len(rel) == 3 and rel[2] == META and _VERSION.fullmatch(rel[1]):
            meta = read_meta(s3, bucket, _join(prefix, rel[0], rel[1]), url) or {}
            found.append(
                {
                    "name": rel[0],
                    "version": int(rel[1][1:]),
                    "url": f"s3://{bucket}/{_join(prefix, rel[0], rel[1])}",
                    "task": meta.get("task"),
                    "metrics": meta.get("metrics", {}),
                    "created": meta.get("created"),
                }
            )
    return sorted(found, key=lambda v: (v["name"], v["version"]))


def resolve(url: str, s3) -> tuple[str, str, dict]:
    """``s3://.../NAME/vN`` (or ``s3://.../NAME``: its newest complete version) -> ``(bucket,
    key, meta)``."""
    bucket, key = parse_url(url)
    last = key.rsplit("/", 1)[-1]
    if not _VERSION.fullmatch(last):  # a name: its newest version
        parent = f"s3://{bucket}/{key.rpartition('/')[0]}".rstrip("/")
        versions = remote_versions(parent, name=last, s3=s3)
        if not versions:
            hint = "`aimass models remote URL` lists what the store holds."
            raise NotFoundError(f"no pushed version under {url}", hint=hint)
        key = parse_url(versions[-1]["url"])[1]
    meta = read_meta(s3, bucket, key, url)
    if meta is None:
        raise NotFoundError(
            f"{url} holds no complete version (no {META})",
            hint="Push it again, or `aimass models remote URL` for what is there.",
        )
    return bucket, key, meta


def _download(s3, bucket: str, obj: dict, target: Path, where: str) -> str:
    """Stream one object to ``target``, refused as soon as it passes the size the listing gave (the
    sum the pull limit was checked on: a store that lists small and sends more cannot fill the
    disk); its sha256."""
    body = s3.get_object(Bucket=bucket, Key=obj["key"])["Body"]
    digest, written = hashlib.sha256(), 0
    with open(target, "wb") as out:
        while block := body.read(1 << 20):
            written += len(block)
            if written > obj["size"]:
                raise IntegrityError(
                    f"{where} sends more than the {obj['size']} bytes its listing gave",
                    hint="Push the version again from the machine that has it.",
                )
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def pull_folder(url: str, dest: Path) -> dict:
    """Download a version into ``dest`` (created; the caller removes it on failure) and check
    every file against ``version.json``; returns the meta with ``url`` and ``bytes``."""
    s3 = client()
    bucket, key, meta = resolve(url, s3)
    where = f"s3://{bucket}/{key}"
    _check_identity(meta, key, where)
    objects = [o for o in _objects(s3, bucket, key, where) if o["key"] != _join(key, META)]
    listed = set(meta["files"])
    names = {o["key"][len(key) + 1 :]: o for o in objects}
    _check_names(set(names) | listed, where)
    unlisted = sorted(set(names) - listed)
    missing = sorted(listed - set(names))
    if unlisted or missing:
        raise IntegrityError(
            f"{where} does not match its {META}: "
            + (f"not listed {unlisted[:3]}" if unlisted else f"missing {missing[:3]}"),
            hint="Push the version again from the machine that has it.",
        )
    total, most = sum(o["size"] for o in objects), limit(PULL_ENV, MAX_PULL_BYTES, None)
    if total > most:
        raise TooLargeError(
            f"{where} is {mebibytes(total)}; the limit is {mebibytes(most)}",
            hint=f"Raise {PULL_ENV} to pull it.",
        )
    dest.mkdir(parents=True)
    for rel, obj in sorted(names.items()):
        target = dest.joinpath(*rel.split("/"))  # checked by _check_names
        target.parent.mkdir(parents=True, exist_ok=True)
        got = _call("downloading", where, _download, s3, bucket, obj, target, f"{where}/{rel}")
        if got != meta["files"][rel]:
            raise IntegrityError(
                f"{where}/{rel} does not match its sha256 in {META} (changed or cut short in the store)",
                hint="Push the version again from the machine that has it.",
            )
    if SUMS not in listed:
        raise IntegrityError(f"{where} is not a sealed version folder (no {SUMS})", hint="Push it again.")
    return {**meta, "url": where, "bytes": total}


def _check_identity(meta: dict, key: str, where: str) -> None:
    """The ``version.json`` of ``.../NAME/vN`` must say NAME and N: a store's writer cannot have a
    pull register (or replace) another model's versions by naming it inside the file."""
    parts = key.split("/")
    named = parts[-2] if len(parts) >= 2 and _VERSION.fullmatch(parts[-1]) else None
    number = meta.get("version")
    if named is None or meta["name"] != named or type(number) is not int or parts[-1] != f"v{number}":
        raise IntegrityError(  # v01 is not v1: push writes v1, and a pull registers what push wrote
            f"{where}/{META} names {meta['name'][:100]!r} version {str(number)[:20]!r}, "
            f"not the {named!r} version {parts[-1]!r} of its URL",
            hint="Push the version again from the machine that has it (versions are pulled from NAME/vN).",
        )


def _check_names(names: set[str], where: str) -> None:
    """Every file name of a version: a path inside it, not a pickle-type file, at most
    ``AIMASS_MAX_PULL_FILES`` of them; an error naming the store otherwise."""
    most = limit(FILES_ENV, MAX_PULL_FILES, None)
    if len(names) > most:
        raise TooLargeError(
            f"{where} holds {len(names)} files; the limit is {most}",
            hint=f"Raise {FILES_ENV} to pull it.",
        )
    for rel in sorted(names):
        try:
            safe_parts(rel)
        except DataError as exc:
            raise IntegrityError(
                f"{where} holds a file with a bad name {rel[:200]!r}: {exc.message}",
                hint="Push the version again from the machine that has it.",
            ) from None
    pickled = sorted(rel for rel in names if rel.lower().endswith(PICKLED))
    if pickled:
        raise IntegrityError(
            f"{where} holds pickle-type files, which run code when loaded: {pickled[:3]}",
            hint="Push the version again from the machine that has it (weights are safetensors).",
        )
