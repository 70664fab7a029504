"""Finding a dataset's shards and reading a pair shard back: one reader for every consumer of
the shards.

- strict (`read_shard`, `raw_samples(url)`): the validator and the pipeline's report. Anything
  off the contract raises: a member that is not a flat file of a sample, a shard without its
  end-of-archive marker (SampleError), or what the tar module raises for a damaged archive.
- tolerant (`raw_samples(url, problems)`): training and evaluation. Nothing a shard holds
  raises: members that are not sample files are skipped, and damage ends the shard with a
  (reason, message) in `problems` (`shard_missing`, `shard_unreadable`, `shard_truncated`).

Members are grouped into samples as WebDataset groups them: consecutive members sharing the
key before the name's first dot (`<key>.<member>`).
"""
from __future__ import annotations

import logging
import os
import re
import tarfile
from typing import Iterator, Optional

import fsspec

from schemas import storage
from schemas.dataset import resolve as resolve_dataset
from schemas.sample import DragSample, SampleError, decode_sample

log = logging.getLogger(__name__)

MEMBER_RE = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")   # WebDataset's `<key>.<member>` split


def list_shards(spec) -> list[str]:
    """Shard URLs of `spec`: a dataset directory (its latest version, see schemas.dataset), a
    directory (local or fsspec URL: its `*.tar`, sorted), a glob, one .tar, or a list of
    paths/URLs (kept as given; a missing one is skipped when read)."""
    if isinstance(spec, (list, tuple)):
        where = spec
        shards = [os.fspath(s) if not isinstance(s, str) else s for s in spec]
    else:
        where = resolve_dataset(os.fspath(spec))
        if where != os.fspath(spec):
            log.info("data: %s is a dataset directory; using its latest version %s", spec, where)
        fs, root = storage.url_to_fs(where)
        if any(c in root for c in "*?["):
            paths = fs.glob(root)
        elif fs.isdir(root):
            paths = fs.glob(root.rstrip("/") + "/*.tar")
        elif fs.isfile(root):
            paths = [root]
        else:
            paths = []
        paths = sorted(p for p in paths if not os.path.basename(p).startswith("."))
        remote = fsspec.core.split_protocol(where)[0] is not None
        shards = [fs.unstrip_protocol(p) if remote else p for p in paths]
    if not shards:
        raise ValueError(f"no shards found for {where!r}: expected a directory holding *.tar "
                         "files, a glob, or a list of shard paths/URLs")
    return shards


class _EndAwareTarInfo(tarfile.TarInfo):
    """Notes on the TarFile when the end-of-archive marker (a zero block) is read, which
    tarfile does not report: a shard cut at a member boundary otherwise reads as complete."""

    @classmethod
    def fromtarfile(cls, tar):
        try:
            return super().fromtarfile(tar)
        except tarfile.EOFHeaderError:
            tar.end_marker_seen = True
            raise


def _members(url: str, strict: bool) -> Iterator[tuple[str, str, bytes]]:
    """(key, member name after the key, bytes) of every sample file of the shard, in order;
    raises SampleError for what is not one (strict) or skips it; raises SampleError for a
    missing end-of-archive marker."""
    with storage.open_input(url) as f:
        tar = tarfile.open(fileobj=f, mode="r|*", tarinfo=_EndAwareTarInfo)
        while (member := tar.next()) is not None:
            tar.members.clear()  # stream mode keeps every header otherwise
            match = MEMBER_RE.match(member.name)
            if strict and not member.isfile():
                raise SampleError(f"{url}: non-file member {member.name!r}")
            if strict and not (match and "/" not in member.name):
                raise SampleError(f"{url}: member name {member.name!r} is not a flat sample "
                                  "member")
            if not (member.isfile() and match):
                continue
            yield match.group(1), match.group(2), tar.extractfile(member).read()
        if not getattr(tar, "end_marker_seen", False):
            raise SampleError(f"{url}: ends without the end-of-archive marker")


def raw_samples(url: str, problems: Optional[list] = None) -> Iterator[dict]:
    """The samples of one tar shard in file order, each {"__key__": key, "<member>": bytes};
    strict when `problems` is None, else tolerant (module doc): the last, possibly incomplete,
    sample of a damaged shard is then dropped."""
    group: Optional[dict] = None
    read_any = False
    try:
        for key, name, data in _members(url, strict=problems is None):
            read_any = True
            if group is not None and group["__key__"] != key:
                yield group
                group = None
            if group is None:
                group = {"__key__": key}
            group[name] = data
    except Exception as e:  # noqa: BLE001 - tolerant: a bad tar or a network error ends it
        if problems is None:
            raise
        if isinstance(e, SampleError):
            problems.append(("shard_truncated", "ends without the end-of-archive marker"))
        elif isinstance(e, FileNotFoundError):
            problems.append(("shard_missing", f"{type(e).__name__}: {e}"))
        else:
            problems.append(("shard_truncated" if read_any else "shard_unreadable",
                             f"{type(e).__name__}: {e}"))
        return
    if group is not None:
        yield group


def read_shard(url: str) -> list[DragSample]:
    """All samples of a shard, read strictly, each decoded and validated."""
    return [decode_sample(members) for members in raw_samples(url)]
