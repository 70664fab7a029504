"""Storage: every input and output of the project is a local path or an fsspec URL (`s3://`,
`gs://`, ...). This module owns how they are joined, listed, read and written, and the one
atomic publish everything written goes through.

    publish("s3://bucket/ds/v1/pairs-000000.tar", data)   # complete or absent, never partial
    configure(StorageSettings(endpoint_url="http://minio:9000"))   # before any URL is opened

Atomic publish: on a local filesystem the bytes go to a hidden temporary name in the target's
directory and are renamed onto it; on an object store one PUT makes the object appear
complete (a multipart upload completes as one object too), so no temporary object is written.

Credentials come from the places each filesystem looks (AWS_* variables, ~/.aws, Google's
application credentials, ...) or from `StorageSettings.options`; `redact` is applied to every
copy of the settings that is written or printed, so no secret reaches a file or a log.
"""
from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field

import fsspec
from fsspec.implementations.local import LocalFileSystem

REDACTED = "<redacted>"
# Storage option names that carry a secret (s3fs key/secret/token, botocore's
# aws_secret_access_key, gcsfs token, passwords), compared in lower case.
_SECRET_NAME = re.compile(r"key|secret|token|password|passwd|credential|session")


@dataclass(repr=False)
class StorageSettings:
    """How to reach object storage; a config section (`storage:`) of the pipeline and the
    trainer. It selects where bytes go, never what they are, so it is not part of a dataset's
    or a run's identity, and it is never written out unredacted: its repr (which a config's
    repr includes, and which Ray shows of a Ray Train run's config) is redacted too."""
    endpoint_url: str = ""      # an S3-compatible store (MinIO, Ceph, a local S3 server)
    options: dict = field(default_factory=dict)  # fsspec options by protocol: {"s3": {...}}

    def __repr__(self) -> str:
        return (f"StorageSettings(endpoint_url={self.endpoint_url!r}, "
                f"options={redact(self.options)!r})")


def settings_problem(settings: StorageSettings) -> str | None:
    """What is wrong with `settings` (a config checks it), or None."""
    for protocol, options in settings.options.items():
        if not isinstance(options, dict):
            return (f"storage.options.{protocol}: expected a mapping of fsspec options, got "
                    f"{type(options).__name__}")
    return None


def configure(settings: StorageSettings | None) -> None:
    """Make `settings` the defaults of every filesystem opened from now on in this process
    (fsspec's own configuration, `fsspec.config.conf`; a keyword given at a call still
    wins). Workers call it with the settings their job was given."""
    if settings is None:
        return
    problem = settings_problem(settings)
    if problem:
        raise ValueError(problem)
    for protocol, options in settings.options.items():
        fsspec.config.conf.setdefault(protocol, {}).update(options)
    if settings.endpoint_url:
        for protocol in ("s3", "s3a"):
            fsspec.config.conf.setdefault(protocol, {})["endpoint_url"] = settings.endpoint_url


def redact(value):
    """A copy of a settings mapping with the value of every secret-looking key replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if _SECRET_NAME.search(str(k).lower()) else redact(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


# --- paths ------------------------------------------------------------------------------------

def url_to_fs(url: str):
    """(filesystem, path on it) of a local path or URL. Listings the filesystem object cached
    for `path` are dropped: other processes (workers, other ranks) write into the same
    directories, and s3fs and gcsfs would otherwise answer from a listing made before."""
    fs, path = fsspec.core.url_to_fs(url)
    fs.invalidate_cache(path)
    return fs, path


def is_url(path: str) -> bool:
    """True for a URL of another filesystem than the local one (`file://` is local)."""
    return "://" in path and not path.startswith("file://")


def join(url: str, *names: str) -> str:
    """`url` + "/" + names, in the form `url` was given (a local path stays a path)."""
    if not is_url(url):
        return os.path.join(url, *names)
    return "/".join([url.rstrip("/"), *names])


def basename(url: str) -> str:
    return posixpath.basename(url.rstrip("/"))


def exists(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.exists(path)


def isdir(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.isdir(path)


def isfile(url: str) -> bool:
    fs, path = url_to_fs(url)
    return fs.isfile(path)


def list_files(url: str) -> dict[str, int]:
    """{name: size} of the files directly in directory `url` ({} when it does not exist);
    hidden names (the temporary files of unfinished writes) are left out. One listing call,
    however many files: callers test membership in it instead of asking per file."""
    fs, path = url_to_fs(url)
    try:
        entries = fs.ls(path, detail=True)
    except FileNotFoundError:
        return {}
    out = {}
    for entry in entries:
        name = posixpath.basename(entry["name"].rstrip("/"))
        if entry["type"] == "file" and not name.startswith("."):
            out[name] = entry["size"]
    return out


def list_names(url: str) -> set[str]:
    """The names of `list_files(url)` without their sizes: locally one directory scan with no
    stat per file (a resume lists hundreds of thousands of shards)."""
    fs, path = url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        return set(list_files(url))
    try:
        with os.scandir(path) as entries:
            return {e.name for e in entries if e.is_file() and not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


# --- reading ----------------------------------------------------------------------------------

def read_bytes(url: str) -> bytes:
    fs, path = url_to_fs(url)
    return fs.cat_file(path)


def read_text(url: str) -> str:
    return read_bytes(url).decode("utf-8")


def open_input(url: str):
    """A binary file object for streaming reads (a context manager)."""
    return fsspec.open(url, "rb").open()


def fetch(url: str, into: str) -> str:
    """A local path for file or directory `url`: itself when it is local, else a copy made
    in a new directory under `into` (for libraries that read local files only)."""
    if not is_url(url):
        return url
    fs, path = url_to_fs(url)
    target = os.path.join(tempfile.mkdtemp(dir=into), basename(url) or "input")
    if fs.isdir(path):
        download_tree(url, target)
    else:
        fs.get_file(path, target)
    return target


# --- writing ----------------------------------------------------------------------------------

@contextlib.contextmanager
def replacing(path: str):
    """The one atomic write of a local file, for writers that need a path of their own
    (`with replacing(path) as tmp: save_file(state, tmp)`): a hidden temporary name beside
    `path`, renamed onto it when the block ends, removed when it fails."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = os.path.join(os.path.dirname(path) or ".",
                       f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def publish(url: str, data: bytes) -> None:
    """Write `data` to `url` atomically (module doc); parent directories are created."""
    fs, path = url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        fs.pipe_file(path, data)
        return
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def publish_text(url: str, text: str) -> None:
    publish(url, text.encode("utf-8"))


def publish_file(local_file: str, url: str) -> None:
    """Copy a local file to `url` atomically (large files: streamed, never held in memory)."""
    fs, path = url_to_fs(url)
    if not isinstance(fs, LocalFileSystem):
        fs.put_file(local_file, path)
        return
    with replacing(path) as tmp:
        shutil.copyfile(local_file, tmp)


def local_files(directory: str) -> list[str]:
    """Paths relative to `directory` of every file under it, sorted."""
    found = []
    for root, _, names in os.walk(directory):
        found += [os.path.relpath(os.path.join(root, n), directory) for n in names]
    return sorted(found)


def upload_tree(local_dir: str, url: str, last: tuple[str, ...] = ()) -> None:
    """Publish every file under `local_dir` to the same relative path under `url`; the files
    named in `last` (relative paths) go after all others, so a reader that waits for them
    finds everything else already there."""
    names = local_files(local_dir)
    for name in [n for n in names if n not in last] + [n for n in last if n in names]:
        publish_file(os.path.join(local_dir, name), join(url, *name.split(os.sep)))


def download_tree(url: str, local_dir: str) -> None:
    """Copy every file under directory `url` into `local_dir` (created)."""
    fs, path = url_to_fs(url)
    root = path.rstrip("/")
    os.makedirs(local_dir, exist_ok=True)
    for remote in sorted(fs.find(root)):
        rel = remote[len(root):].lstrip("/")
        target = os.path.join(local_dir, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        fs.get_file(remote, target)


def remove(url: str) -> None:
    """Delete a file, or a directory with everything under it; nothing if it is absent."""
    fs, path = url_to_fs(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)
