"""``inspect`` checks every artifact's bytes against its manifest and names the damaged ones."""

from __future__ import annotations

import pandas as pd

from flows import cli
from tasks.store.artifacts import materialize, write_parquet


def _artifact(data, stage: str, rows: int):
    def build(folder):
        return write_parquet(pd.DataFrame({"x": range(rows)}), folder / "t.parquet")

    return materialize(str(data), stage, 1, {"rows": rows}, [], build)


def test_inspect_names_a_damaged_artifact_and_exits_1(tmp_path, capsys):
    sound, damaged = _artifact(tmp_path, "raw", 3), _artifact(tmp_path, "pairs", 4)
    assert cli.main(["inspect", "--data-dir", str(tmp_path)]) == 0
    assert "DAMAGED" not in capsys.readouterr().out
    file = damaged.folder / "t.parquet"
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte, same size
    file.write_bytes(bytes(data))
    assert cli.main(["inspect", "--data-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"damaged: pairs/{damaged.key} (t.parquet)" in out and f"damaged: raw/{sound.key}" not in out
    cli.main(["inspect", f"pairs/{damaged.key}", "--data-dir", str(tmp_path)])
    assert "check: DAMAGED: t.parquet" in capsys.readouterr().out
