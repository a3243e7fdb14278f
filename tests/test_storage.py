"""Run storage (raylign/storage.py) on a local folder and on an S3-compatible server on loopback:
files, folders written in one node's scratch and read in another's, and URIs with a query."""

import pytest

from raylign.storage import RunStorage, StorageError, join
from raylign.testing import LoopbackS3


@pytest.fixture(scope="module")
def s3():
    with LoopbackS3() as server, pytest.MonkeyPatch.context() as env:
        for key, value in server.env.items():  # pyarrow reads the credentials from the environment
            env.setenv(key, value)
        yield server


def test_a_uri_keeps_its_query_when_a_path_is_joined():
    assert join("s3://b/runs/r1?endpoint_override=h:9&scheme=http", "adapters/cycle_001") == \
        "s3://b/runs/r1/adapters/cycle_001?endpoint_override=h:9&scheme=http"
    assert join("/tmp/run/", "state.json") == "/tmp/run/state.json"


@pytest.mark.parametrize("where", ["local", "s3"])
def test_files_and_folders_round_trip_between_nodes_that_share_no_disk(where, s3, tmp_path, monkeypatch):
    storage = RunStorage(tmp_path / "run" if where == "local" else s3.uri(f"runs/{tmp_path.name}"))
    assert storage.is_empty() and not storage.exists("state.json")
    storage.write_text("state.json", '{"a": 1}')
    storage.write_text("state.json", '{"a": 2}')  # replaced whole
    assert storage.read_text("state.json") == '{"a": 2}' and not storage.is_empty()

    # One node writes a folder in its scratch and uploads it; another, with its own scratch, reads it.
    monkeypatch.setenv("RAYLIGN_SCRATCH", str(tmp_path / "node-a"))
    with storage.writing("adapters/cycle_001") as folder:
        (folder / "adapter_model.safetensors").write_bytes(b"\x00" * 1000)
        (folder / "sub").mkdir()
        (folder / "sub" / "config.json").write_text("{}")
    monkeypatch.setenv("RAYLIGN_SCRATCH", str(tmp_path / "node-b"))
    copy = storage.local("adapters/cycle_001")
    assert sorted(p.relative_to(copy).as_posix() for p in copy.rglob("*") if p.is_file()) == \
        ["adapter_model.safetensors", "sub/config.json"]
    assert (copy / "adapter_model.safetensors").read_bytes() == b"\x00" * 1000
    if where == "s3":
        assert copy.is_relative_to(tmp_path / "node-b") and copy.name == "cycle_001"  # DeepSpeed finds tags by name
        assert storage.local("adapters/cycle_001") == copy  # complete in scratch: not downloaded again
    else:
        assert copy == tmp_path / "run" / "adapters" / "cycle_001"  # a local storage copies nothing
    with pytest.raises(FileNotFoundError, match="holds no files"):
        storage.local("checkpoints/cycle_009")

    storage.delete()
    assert storage.is_empty()


def test_a_storage_that_cannot_be_opened_is_one_line():
    with pytest.raises(StorageError, match=r"^storage nosuchfs://x/y: "):
        RunStorage("nosuchfs://x/y")
