"""Where a dataset run writes: a local folder, or a folder behind a URI (``s3://``, ``gs://``,
``hdfs://``, ``file://``: anything pyarrow's file systems open).

One small interface, :class:`Store`, over the few things the sink, the planner and the Ray
workers do with the output folder: read and write small files, commit a file atomically,
list a folder, delete, and hold the run's lock. :class:`LocalStore` keeps the local file
system's guarantees (fsync, rename, ``flock``); :class:`ArrowStore` gets atomic commits from
a write to a hidden temporary name followed by a move (a rename, or a server-side copy on
object stores: the final name appears whole or not at all), and its lock is a *lease*: a
``.lock`` file naming the run and when its claim ends, renewed as the run commits shards.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError, NoSpaceError

# errno values that mean the device (or the user's quota on it) is full
_FULL = (errno.ENOSPC, errno.EDQUOT)

LEASE_SECONDS = 600.0


def is_uri(location: str) -> bool:
    """Whether ``location`` is a URI (``scheme://...``) rather than a path."""
    scheme, sep, _ = location.partition("://")
    return bool(sep) and len(scheme) > 1 and scheme.replace("+", "").isalnum()


def store_for(location: str | Path) -> Store:
    """The store of an output location: a URI's file system, else the local folder."""
    text = str(location)
    return ArrowStore(text) if is_uri(text) else LocalStore(Path(text))


def _tag() -> str:
    """A name part unique to this writer (host, process, random), for temporary files."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Store:
    """A folder (``""`` names the folder itself; other names are relative, ``/``-separated)."""

    location: str

    def exists(self, name: str = "") -> bool:
        raise NotImplementedError

    def is_folder(self, name: str = "") -> bool:
        raise NotImplementedError

    def read_bytes(self, name: str) -> bytes:
        raise NotImplementedError

    def commit(self, name: str, data: bytes) -> None:
        """Write ``name`` atomically: it holds all of ``data`` or keeps what it held."""
        self.commit_chunks(name, [data])

    def commit_chunks(self, name: str, chunks: Iterable[bytes]) -> None:
        """:meth:`commit` of data that comes in chunks (never all in memory at once)."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Remove the file or folder ``name`` (nothing if it is missing)."""
        raise NotImplementedError

    def names(self, folder: str = "") -> list[str]:
        """Names of the entries directly in ``folder`` (none if it is missing)."""
        raise NotImplementedError

    def make_folder(self, name: str = "") -> None:
        raise NotImplementedError

    def open_input(self, name: str) -> Any:
        """A seekable binary file (for Parquet footers)."""
        raise NotImplementedError

    def parent(self) -> Store:
        """The folder this one is in (``OUT.errors.jsonl`` is written beside ``OUT``)."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """This folder's own name."""
        return self.location.rstrip("/").rsplit("/", 1)[-1]

    def lock(self) -> None:
        """Claim the folder for this run, or an error when another run holds it."""
        raise NotImplementedError

    def renew(self) -> None:
        """Keep the claim alive (a lease is renewed as shards are committed)."""

    def release(self) -> None:
        raise NotImplementedError

    def where(self, name: str = "") -> str:
        """``name`` as the user would write it (for messages and records)."""
        return f"{self.location.rstrip('/')}/{name}" if name else self.location


class LocalStore(Store):
    """A local folder: files synced and renamed into place, the lock held with ``flock``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.location = str(folder)
        self._handle: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """The folder only: a copy sent to a Ray worker does not hold the driver's lock."""
        return {"folder": self.folder}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["folder"])  # type: ignore[misc]

    def _path(self, name: str) -> Path:
        return self.folder / name if name else self.folder

    def exists(self, name: str = "") -> bool:
        return self._path(name).exists()

    def is_folder(self, name: str = "") -> bool:
        return self._path(name).is_dir()

    def read_bytes(self, name: str) -> bytes:
        return self._path(name).read_bytes()

    def commit_chunks(self, name: str, chunks: Iterable[bytes]) -> None:
        """Write a hidden temporary file, sync it and rename it into place; on any failure the
        temporary file is removed (a full disk raises :class:`NoSpaceError`)."""
        path = self._path(name)
        tmp = path.with_name(f".{path.name}.tmp-{_tag()}")
        written = 0
        try:
            with tmp.open("wb") as handle:
                for chunk in chunks:
                    written += len(chunk)
                    handle.write(chunk)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException as exc:
            tmp.unlink(missing_ok=True)
            if isinstance(exc, OSError) and exc.errno in _FULL:
                free = shutil.disk_usage(path.parent).free
                raise NoSpaceError(self.location, written, free) from None
            raise

    def delete(self, name: str) -> None:
        path = self._path(name)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def names(self, folder: str = "") -> list[str]:
        path = self._path(folder)
        return sorted(p.name for p in path.iterdir()) if path.is_dir() else []

    def make_folder(self, name: str = "") -> None:
        from ..outputs import writable_folder

        if name:
            self._path(name).mkdir(parents=True, exist_ok=True)
        else:
            writable_folder(self.folder)

    def open_input(self, name: str) -> Any:
        return self._path(name).open("rb")

    def parent(self) -> Store:
        return LocalStore(self.folder.parent)

    @property
    def name(self) -> str:
        return self.folder.name

    def lock(self) -> None:
        """Hold ``.lock`` with ``flock``: released by the system when the process ends, even
        by ``kill -9``."""
        import fcntl

        handle = self._path(".lock").open("a+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise InputError(
                f"{self.location} is being written by another run right now; wait for it or "
                "stop it first"
            ) from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class ArrowStore(Store):
    """A folder behind a URI, through pyarrow's file systems (opened lazily, so the store
    pickles to Ray workers as its URI). ``clock`` tells the lease's time (seconds since the
    epoch; tests pass a fake one)."""

    def __init__(
        self, uri: str, lease_seconds: float = LEASE_SECONDS, clock: Callable[[], float] = time.time
    ) -> None:
        self.location = uri.rstrip("/")
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._fs: Any = None
        self._base = ""
        self._claim: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"location": self.location, "lease_seconds": self.lease_seconds}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["location"], state["lease_seconds"])  # type: ignore[misc]

    def _opened(self) -> tuple[Any, str]:
        """The file system and the folder's path in it, opened on first use."""
        if self._fs is None:
            from pyarrow import fs

            try:
                self._fs, base = fs.FileSystem.from_uri(self.location)
            except Exception as exc:  # pyarrow raises several kinds for a bad URI or scheme
                raise InputError(f"cannot open {self.location}: {exc}") from None
            self._base = base.rstrip("/")
        return self._fs, self._base

    @property
    def fs(self) -> Any:
        return self._opened()[0]

    def _path(self, name: str) -> str:
        base = self._opened()[1]
        return f"{base}/{name}" if name else base

    def _info(self, name: str) -> Any:
        return self.fs.get_file_info(self._path(name))

    def exists(self, name: str = "") -> bool:
        from pyarrow import fs

        return bool(self._info(name).type != fs.FileType.NotFound)

    def is_folder(self, name: str = "") -> bool:
        from pyarrow import fs

        return bool(self._info(name).type == fs.FileType.Directory)

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self._path(name)) as handle:
            return bytes(handle.read())

    def commit_chunks(self, name: str, chunks: Iterable[bytes]) -> None:
        parent, _, base = name.rpartition("/")
        tmp = f"{parent}/.{base}.tmp-{_tag()}" if parent else f".{base}.tmp-{_tag()}"
        written = 0
        try:
            with self.fs.open_output_stream(self._path(tmp)) as handle:
                for chunk in chunks:
                    written += len(chunk)
                    handle.write(chunk)
            self.fs.move(self._path(tmp), self._path(name))
        except BaseException as exc:
            with contextlib.suppress(OSError):
                self.delete(tmp)
            if isinstance(exc, OSError) and (
                exc.errno in _FULL or "No space left" in str(exc) or "quota" in str(exc).lower()
            ):
                raise NoSpaceError(self.location, written, None) from None
            raise

    def delete(self, name: str) -> None:
        from pyarrow import fs

        info = self._info(name)
        if info.type == fs.FileType.Directory:
            self.fs.delete_dir(self._path(name))
        elif info.type != fs.FileType.NotFound:
            self.fs.delete_file(self._path(name))

    def names(self, folder: str = "") -> list[str]:
        from pyarrow import fs

        selector = fs.FileSelector(self._path(folder), allow_not_found=True)
        return sorted(info.base_name for info in self.fs.get_file_info(selector))

    def make_folder(self, name: str = "") -> None:
        try:
            self.fs.create_dir(self._path(name), recursive=True)
            probe = f"{name}/.probe-{_tag()}" if name else f".probe-{_tag()}"
            self.commit(probe, b"")
            self.delete(probe)
        except OSError as exc:
            raise InputError(f"cannot write into {self.where(name)}: {exc}") from None

    def open_input(self, name: str) -> Any:
        return self.fs.open_input_file(self._path(name))

    def parent(self) -> Store:
        return ArrowStore(self.location.rsplit("/", 1)[0], self.lease_seconds)

    def lock(self) -> None:
        """Take the lease ``.lock``: refused while another run's lease is unexpired. A run that
        died leaves a lease that expires ``lease_seconds`` after its last renewal.

        An object store has no atomic create-if-absent in pyarrow, so two runs starting within
        the same moment could both take the lease; the second to write it wins, and the first
        sees that at its next renewal and stops.
        """
        if self.exists(".lock"):
            try:
                held = json.loads(self.read_bytes(".lock"))
            except ValueError:
                held = {}
            if float(held.get("until", 0)) > self._clock():
                raise InputError(
                    f"{self.location} is being written by another run ({held.get('run', '?')}) "
                    f"until at least {time.ctime(float(held['until']))}; wait for it or stop "
                    "it first (a run that died frees it then)"
                )
        self._claim = _tag()
        self._write_lease()
        self._check_lease()

    def _write_lease(self) -> None:
        lease = {"run": self._claim, "until": self._clock() + self.lease_seconds}
        self.commit(".lock", json.dumps(lease).encode("utf-8"))

    def _check_lease(self) -> None:
        try:
            held = json.loads(self.read_bytes(".lock")).get("run")
        except (OSError, ValueError):
            held = None
        if held != self._claim:
            self._claim = None
            raise InputError(f"{self.location} was claimed by another run at the same time")

    def renew(self) -> None:
        if self._claim is not None:
            self._check_lease()
            self._write_lease()

    def release(self) -> None:
        if self._claim is not None:
            try:
                held = json.loads(self.read_bytes(".lock")).get("run")
                if held == self._claim:
                    self.delete(".lock")
            except (OSError, ValueError):
                pass
            self._claim = None
