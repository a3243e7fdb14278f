"""Run storage: where a run keeps everything, on any filesystem pyarrow opens.

A run's storage is a local folder or a `pyarrow.fs` URI (`s3://bucket/runs/r1`, `gs://...`,
`hdfs://...`; S3-compatible servers take `?endpoint_override=host:port&scheme=http`; credentials
come from each node's environment, as pyarrow reads them, never from the config). It holds the
buffer, adapters and policies, the learners' DeepSpeed checkpoints (each rank its shard),
`config.yaml`, `state.json`, `metrics.json` and the plots. No role reads a path another node
wrote: a role that writes a folder writes it in its node's scratch space and uploads it
(`writing`); a role that reads one downloads it into scratch (`local`). On a local folder both
are the folder itself, so a one-machine run copies nothing.

Scratch is `$RAYLIGN_SCRATCH` on each node (a node property, like its disks), else the system's
temporary folder; it is a cache only, keyed by the storage URI, and may be wiped at any time.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import pyarrow.fs as pafs

SCRATCH_ENV = "RAYLIGN_SCRATCH"


class StorageError(ValueError):
    """A storage URI that cannot be opened, with a one-line message."""


def is_uri(location: str) -> bool:
    return "://" in location and not location.startswith("file://")


def join(location: str, rel: str) -> str:
    """`location` / `rel`, for a folder or a URI with a query (`s3://b/run?endpoint_override=...`)."""
    if not rel:
        return location
    base, sep, query = location.partition("?")
    return f"{base.rstrip('/')}/{rel}{sep}{query}"


def scratch_root() -> Path:
    """This node's scratch folder for runs' caches."""
    return Path(os.environ.get(SCRATCH_ENV) or Path(tempfile.gettempdir()) / "raylign-scratch")


class RunStorage:
    """A run's storage, addressed by paths relative to its root (`adapters/cycle_001`).

    Plain and picklable by its location: actors rebuild it on their own node, so each opens
    the filesystem with its own node's credentials and scratch folder."""

    def __init__(self, location: str | Path):
        location = str(location)
        if not is_uri(location):
            location = str(Path(location.removeprefix("file://")).expanduser().resolve())
        self.location = location
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(location)
        except (ValueError, OSError) as e:
            raise StorageError(f"storage {location}: {str(e).splitlines()[0]}") from None
        self.is_local = isinstance(self.fs, pafs.LocalFileSystem)

    @classmethod
    def of(cls, where: "RunStorage | str | Path") -> "RunStorage":
        return where if isinstance(where, RunStorage) else cls(where)

    def __reduce__(self):
        return RunStorage, (self.location,)

    def __str__(self) -> str:
        return self.location

    @property
    def name(self) -> str:
        """The run's last path segment: names its actors and Serve apps."""
        return self.root.rstrip("/").rsplit("/", 1)[-1]

    def uri(self, rel: str = "") -> str:
        return join(self.location, rel)

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    # -- files ----------------------------------------------------------------------------

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self._path(rel)).type != pafs.FileType.NotFound

    def is_empty(self) -> bool:
        """True when nothing is stored under the root (or the root does not exist)."""
        info = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return not info

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self._path(rel)) as f:
            return f.read()

    def read_text(self, rel: str) -> str:
        return self.read_bytes(rel).decode()

    def write_bytes(self, rel: str, data: bytes) -> str:
        """Atomically where the filesystem can rename (a temporary file, then a move); object
        stores write a whole object at once, so readers never see half a file either way."""
        path = self._path(rel)
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        if self.is_local:
            tmp = f"{path.rsplit('/', 1)[0]}/.{path.rsplit('/', 1)[1]}.{uuid.uuid4().hex}.tmp"
            with self.fs.open_output_stream(tmp) as f:
                f.write(data)
            self.fs.move(tmp, path)
        else:
            with self.fs.open_output_stream(path) as f:
                f.write(data)
        return self.uri(rel)

    def write_text(self, rel: str, text: str) -> str:
        return self.write_bytes(rel, text.encode())

    def delete(self, rel: str = "") -> None:
        """A file or a folder, if it is there."""
        info = self.fs.get_file_info(self._path(rel))
        if info.type == pafs.FileType.Directory:
            self.fs.delete_dir(self._path(rel))
        elif info.type == pafs.FileType.File:
            self.fs.delete_file(self._path(rel))

    # -- folders between storage and a node's scratch -------------------------------------

    def scratch(self, rel: str) -> Path:
        """This node's cache folder for `rel` of this storage (not created): named by the
        folder's own URI, so a folder reached through its run or on its own is cached once."""
        location = self.uri(rel)
        name = location.partition("?")[0].rstrip("/").rsplit("/", 1)[-1]
        return scratch_root() / hashlib.sha256(location.encode()).hexdigest()[:12] / name  # keeps its own name

    @contextlib.contextmanager
    def writing(self, rel: str, scratch: str = "", keep: bool = True) -> Iterator[Path]:
        """A local folder to write `rel` in; uploaded when the block ends without error. On a
        local storage it is the folder itself. `scratch` keeps writers that share a node apart
        (each learner rank its own folder); without `keep` the scratch copy goes after upload."""
        if self.is_local:
            folder = Path(self._path(rel))
            folder.mkdir(parents=True, exist_ok=True)
            yield folder
            return
        folder = self.scratch(f"{scratch}/{rel}" if scratch else rel)
        shutil.rmtree(folder, ignore_errors=True)  # what a killed writer left is not this write's
        folder.mkdir(parents=True, exist_ok=True)
        yield folder
        self.upload(folder, rel)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)

    def upload(self, folder: Path, rel: str) -> None:
        """Every file under the local `folder` to `rel`, file by file (a folder a writer adds
        to, such as a checkpoint that every rank writes its shard into, is never replaced)."""
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            dest = self._path(f"{rel}/{file.relative_to(folder).as_posix()}")
            self.fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
            pafs.copy_files(str(file), dest, destination_filesystem=self.fs)

    def copy(self, source: str, dest: str) -> str:
        """The folder `source` as `dest` too, replacing what `dest` held (adapters/best)."""
        self.delete(dest)
        selector = pafs.FileSelector(self._path(source), recursive=True)
        prefix = self._path(source).rstrip("/") + "/"
        for info in self.fs.get_file_info(selector):
            if info.is_file:
                target = self._path(f"{dest}/{info.path.removeprefix(prefix)}")
                self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
                self.fs.copy_file(info.path, target)
        return self.uri(dest)

    def local(self, rel: str) -> Path:
        """A local copy of the folder `rel`: the folder itself on a local storage, else a
        download into this node's scratch (reused when already complete there)."""
        if self.is_local:
            if not any(Path(self._path(rel)).glob("*")):
                raise FileNotFoundError(f"{self.uri(rel)} holds no files")
            return Path(self._path(rel))
        files = [info for info in self.fs.get_file_info(pafs.FileSelector(self._path(rel), recursive=True,
                                                                             allow_not_found=True)) if info.is_file]
        if not files:
            raise FileNotFoundError(f"{self.uri(rel)} holds no files")
        folder = self.scratch(rel)
        prefix = self._path(rel).rstrip("/") + "/"
        wanted = {info.path.removeprefix(prefix): info.size for info in files}
        have = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()} \
            if folder.is_dir() else {}
        if have != wanted:
            shutil.rmtree(folder, ignore_errors=True)
            tmp = folder.with_name(f".{folder.name}.{uuid.uuid4().hex}")
            for name in wanted:
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                pafs.copy_files(prefix + name, str(tmp / name), source_filesystem=self.fs)
            with contextlib.suppress(OSError):  # another process on this node got there first
                tmp.rename(folder)
            shutil.rmtree(tmp, ignore_errors=True)
        return folder


def fetch(location: str) -> Path:
    """A local copy of the folder at `location` (a path, or a URI downloaded into scratch)."""
    return RunStorage(location).local("")
