def test_a_failed_write_keeps_the_previous_file_and_exits_74(tmp_path, monkeypatch):
    import os

    import pytest

    from neurosepclr.errors import ExitCode, IOFailure
    from neurosepclr.io import atomic_write_text

    target = atomic_write_text(tmp_path / "table.tsv", "complete\n")

    def disk_full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(IOFailure, match="No space left on device") as caught:
        atomic_write_text(target, "half")
    assert caught.value.exit_code == ExitCode.IO
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["table.tsv"]  # no temporary file left
