"""PreferenceBuffer: the durable store of prompts, rollouts, judgments, pairs and KTO examples.

Parquet files under `<root>/<table>/cycle=<n>/<part>.parquet`, written through `pyarrow.fs`,
so the root may be a local folder, a shared mount or an object-store URI. Writes are atomic
(a hidden temporary file, then a rename): readers never see half a file. A part name is
chosen by the writer, so writing the same part again replaces it instead of doubling rows: a
write that is sent again (the actor restarted under it) or a stage that is run again (a resumed
run) leaves each row once. The actor holds nothing but its root, so it restarts freely.
"""

from __future__ import annotations

import time
import uuid

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from raylign.actors.metrics import RunMetrics
from raylign.data.schemas import TABLES
from raylign.storage import RunStorage

LISTING_ATTEMPTS = 5


class PreferenceBuffer:
    """Plain class; the driver runs it as a named Ray actor."""

    def __init__(self, root: str, run: str = ""):
        """`run`: the run's name, the tag of the rows and bytes it counts (actors/metrics.py)."""
        storage = RunStorage(root)  # a folder made absolute, or a URI with its query
        self.fs, self.root = storage.fs, storage.root
        self.fs.create_dir(self.root, recursive=True)
        self.metrics = RunMetrics(run)

    @staticmethod
    def _schema(table: str) -> pa.Schema:
        if table not in TABLES:
            raise ValueError(f"buffer has no table {table!r}; tables are {sorted(TABLES)}")
        return TABLES[table]

    def _dir(self, table: str, cycle: int) -> str:
        self._schema(table)
        return f"{self.root}/{table}/cycle={cycle}"

    def write(self, table: str, cycle: int, part: str, data: pa.Table) -> int:
        """Write `data` as one part of `table` for `cycle`; returns the rows written."""
        data = data.cast(self._schema(table))  # fails loudly on a schema mismatch
        folder = self._dir(table, cycle)
        self.fs.create_dir(folder, recursive=True)
        tmp = f"{folder}/.{part}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(tmp, compression=None) as out:
            pq.write_table(data, out)
            nbytes = out.tell()
        self.fs.move(tmp, f"{folder}/{part}.parquet")
        self.metrics.written(table, data.num_rows, nbytes)
        return data.num_rows

    def _files(self, table: str, cycle: int | None) -> list[str]:
        base = f"{self.root}/{table}" if cycle is None else self._dir(table, cycle)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        for attempt in range(LISTING_ATTEMPTS):
            try:
                infos = self.fs.get_file_info(selector)
                break
            except FileNotFoundError:
                # A listing that races a writer creating the folder fails on the local filesystem
                # even with allow_not_found (pyarrow); a second look sees the folder whole.
                if attempt == LISTING_ATTEMPTS - 1:
                    raise
                time.sleep(0.01 * (attempt + 1))
        return sorted(
            info.path for info in infos
            if info.is_file and info.path.endswith(".parquet") and not info.base_name.startswith(".")
        )

    def parts(self, table: str, cycle: int) -> list[str]:
        """The committed parts of `table` for `cycle`, by name, sorted."""
        return [path.rsplit("/", 1)[1].removesuffix(".parquet") for path in self._files(table, cycle)]

    def read(self, table: str, cycle: int | None = None, part: str | None = None) -> pa.Table:
        """All committed rows of `table`, of one cycle or of all, or of one part of a cycle.
        Parts come in the order of their names."""
        schema = self._schema(table)
        if part is not None:
            if cycle is None:
                raise ValueError("reading one part needs its cycle")
            return pq.read_table(f"{self._dir(table, cycle)}/{part}.parquet", schema=schema, filesystem=self.fs)
        files = self._files(table, cycle)
        if not files:
            return schema.empty_table()
        return ds.dataset(files, schema=schema, format="parquet", filesystem=self.fs).to_table()

    def counts(self) -> dict[str, dict[int, int]]:
        """Rows per table per cycle."""
        out: dict[str, dict[int, int]] = {}
        for table in TABLES:
            for path in self._files(table, None):
                cycle = int(path.split("cycle=")[1].split("/")[0])
                rows = pq.ParquetFile(path, filesystem=self.fs).metadata.num_rows
                out.setdefault(table, {}).setdefault(cycle, 0)
                out[table][cycle] += rows
        return out

    def uri(self) -> str:
        return self.root
