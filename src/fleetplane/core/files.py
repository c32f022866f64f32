"""Files devices send (photos, tachograph downloads), kept on disk under the data directory.

A file is written to a temporary name, flushed to disk and renamed, so a crash leaves either
the whole file or none; the database row that points to it is committed afterwards.

A file that arrives in parts is first spooled under `spool/`, so its parts wait on disk, not
in memory, until the last one arrives."""

import asyncio
import hashlib
import os
import shutil
import uuid
from pathlib import Path

SPOOL_FOLDER = "spool"


class FileStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def write(self, relative_path: str, data: bytes) -> str:
        """Stores `data`; returns its SHA-256 (hex)."""
        return await asyncio.to_thread(self._write, relative_path, data)

    def path_of(self, relative_path: str) -> Path:
        path = (self.root / relative_path).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError("a stored file's path must stay inside the file store")
        return path

    def spool(self) -> "SpoolFile":
        """A new, empty file for the parts of a file still arriving."""
        return SpoolFile(self.root / SPOOL_FOLDER / uuid.uuid4().hex)

    def clear_spools(self) -> None:
        shutil.rmtree(self.root / SPOOL_FOLDER, ignore_errors=True)

    def _write(self, relative_path: str, data: bytes) -> str:
        path = self.path_of(relative_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".partial")
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        return hashlib.sha256(data).hexdigest()


class SpoolFile:
    """The parts of one file, appended as they arrive; read whole once complete, or discarded.

    Each part is one protocol block, written to the page cache in place; the file is opened
    per part so that waiting transfers hold no file handles. Nothing is fsynced: an unfinished
    file does not survive a restart anyway."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = 0
        self.discarded = False

    def append(self, data: bytes) -> None:
        if self.size == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as file:
            file.write(data)
        self.size += len(data)

    def read(self) -> bytes:
        return self.path.read_bytes() if self.size else b""

    def discard(self) -> None:
        self.discarded = True
        self.path.unlink(missing_ok=True)
