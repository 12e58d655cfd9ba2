"""train.preprocess tells a newcomer what it does (issue 27): one warning line for the captions cut to the text
encoder's token limit (how many, an example, the limit), a time estimate after the first clip, and a last line
naming the cache folder."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("av")

pytestmark = pytest.mark.usefixtures("one_thread")


def test_preprocess_warns_once_for_cut_captions_and_ends_with_the_cache(tmp_path, capsys):
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld
    from train import preprocess

    data = ShapesWorld(split="train", num_samples=3, seed=4)
    long = " and ".join(["a red circle moves to the left"] * 5)  # 170 bytes: over the demo's 96 tokens
    rows = []
    for k in range(3):
        write_mp4(tmp_path / f"c{k}.mp4", (data[k].video + 1) / 2, 8)
        rows.append({"media_path": f"c{k}.mp4", "caption": long if k else data[k].caption})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cache"
    preprocess.run(preprocess.PreprocessConfig(data=str(tmp_path / "m.jsonl"), out=str(out), text_tokens=96))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    warnings = [line for line in lines if "warning" in line]
    assert len(warnings) == 1 and "2 of 3 captions exceed the text encoder's limit of 96 tokens" in warnings[0]
    assert "has 171 tokens" in warnings[0]
    assert any("the first clip took" in line and "for the 2 clips left" in line for line in lines)
    assert lines[-1].startswith(f"[preprocess] the cache is in {out.resolve()}")
    preprocess.run(preprocess.PreprocessConfig(data=str(tmp_path / "m.jsonl"), out=str(out), text_tokens=96))
    rerun = capsys.readouterr().out  # all cached: nothing encoded, nothing to warn about, still says where
    assert "warning" not in rerun and rerun.strip().splitlines()[-1].startswith("[preprocess] the cache is in")
