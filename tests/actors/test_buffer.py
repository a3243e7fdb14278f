import threading

import pyarrow as pa
import pytest

from raylign.actors.buffer import PreferenceBuffer
from raylign.data.schemas import PROMPTS


def prompts(n, start=0):
    return pa.Table.from_pylist([
        {"id": f"p{i}", "prompt": "q", "harmful_level": 0, "principle_index": 1, "method": "direct", "split": "train"}
        for i in range(start, start + n)], schema=PROMPTS)


def test_write_read_and_counts_by_cycle(tmp_path):
    buf = PreferenceBuffer(str(tmp_path / "buf"))
    assert buf.write("prompts", 0, "a", prompts(3)) == 3
    buf.write("prompts", 1, "a", prompts(2, start=3))
    buf.write("prompts", 1, "b", prompts(4, start=5))
    assert buf.read("prompts", 1).num_rows == 6
    assert buf.read("prompts").num_rows == 9
    assert sorted(buf.read("prompts", 0)["id"].to_pylist()) == ["p0", "p1", "p2"]
    assert buf.counts() == {"prompts": {0: 3, 1: 6}}
    assert (tmp_path / "buf" / "prompts" / "cycle=1" / "b.parquet").is_file()


def test_rewriting_a_part_replaces_it_instead_of_doubling(tmp_path):
    buf = PreferenceBuffer(str(tmp_path))
    buf.write("prompts", 2, "train-0001", prompts(5))
    buf.write("prompts", 2, "train-0001", prompts(5))  # a retried stage writes the same part
    assert buf.counts()["prompts"][2] == 5


def test_readers_never_see_temporary_files(tmp_path):
    buf = PreferenceBuffer(str(tmp_path))
    buf.write("prompts", 0, "done", prompts(2))
    (tmp_path / "prompts" / "cycle=0" / ".half.1234.tmp").write_bytes(b"PAR1 half written")
    assert buf.read("prompts", 0).num_rows == 2
    assert buf.counts() == {"prompts": {0: 2}}


def test_a_listing_racing_a_writer_that_creates_the_folder_does_not_fail(tmp_path):
    """pyarrow's local listing raised FileNotFoundError on a folder being created beside it (a
    fault test's watcher died of it in CI): 100 fresh cycles, each listed while it is written."""
    buf, errors = PreferenceBuffer(str(tmp_path)), []
    for cycle in range(100):
        writer = threading.Thread(target=buf.write, args=("prompts", cycle, "train-00000", prompts(1)))
        writer.start()
        while writer.is_alive():
            try:
                assert buf.parts("prompts", cycle) in ([], ["train-00000"])
            except FileNotFoundError as error:
                errors.append(error)
        writer.join()
        assert buf.parts("prompts", cycle) == ["train-00000"]
    assert errors == []


def test_empty_table_reads_with_its_schema(tmp_path):
    buf = PreferenceBuffer(str(tmp_path))
    empty = buf.read("pairs", 3)
    assert empty.num_rows == 0 and "chosen" in empty.column_names


def test_unknown_table_and_wrong_schema_fail_loudly(tmp_path):
    buf = PreferenceBuffer(str(tmp_path))
    with pytest.raises(ValueError, match="no table 'rewards'"):
        buf.write("rewards", 0, "a", prompts(1))
    with pytest.raises((pa.ArrowInvalid, ValueError, KeyError)):
        buf.write("pairs", 0, "a", prompts(1))


def test_parts_are_listed_by_name_and_read_one_at_a_time(tmp_path):
    buf = PreferenceBuffer(str(tmp_path))
    buf.write("prompts", 1, "train-00001", prompts(2, start=2))
    buf.write("prompts", 1, "train-00000", prompts(2))
    (tmp_path / "prompts" / "cycle=1" / ".train-00002.ab.tmp").write_bytes(b"half")  # a write that died
    assert buf.parts("prompts", 1) == ["train-00000", "train-00001"]
    assert buf.parts("prompts", 2) == []
    assert buf.read("prompts", 1, part="train-00001")["id"].to_pylist() == ["p2", "p3"]
    assert buf.read("prompts", 1)["id"].to_pylist() == ["p0", "p1", "p2", "p3"]  # parts in name order
    with pytest.raises(ValueError, match="needs its cycle"):
        buf.read("prompts", part="train-00000")
