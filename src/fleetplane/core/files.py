"""Files devices send (photos, tachograph downloads), kept on disk under the data directory.

A file is written to a temporary name, flushed to disk and renamed, so a crash leaves either
the whole file or none; the database row that points to it is committed afterwards."""

import asyncio
import hashlib
import os
from pathlib import Path


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
