"""A latent-cache item holding NaN / inf is refused by name when it is read (issue 27): the item's id, its clip,
the file to delete and how to encode it again; not a non-finite loss that blames the learning rate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ltx.data.latent_cache import NULL_ID, LatentCache, latent_file, text_file


def _cache(root: Path) -> Path:
    """A hand-made two-item cache (the ltx/data/latent_cache.py format)."""
    for d in ("latents", "text"):
        (root / d).mkdir(parents=True)
    items = []
    for iid in ("a", "b"):
        item = {"id": iid, "media_path": f"{iid}.mp4", "caption": f"caption {iid}", "reference_path": None,
                "bucket": [9, 32, 32], "latent_shape": [2, 2, 1, 1], "fps": None}
        save_file({"latents": torch.zeros(2, 2, 1, 1)}, str(latent_file(root, iid)),
                  {"item": json.dumps(item), "latent_space": "s"})
        items.append(item)
    for iid in ("a", "b", NULL_ID):
        save_file({"context": torch.zeros(4, 8), "mask": torch.ones(4, dtype=torch.int64)}, str(text_file(root, iid)))
    index = {"version": 1, "complete": True, "vae": {"checkpoint": "v", "latent_space": "s", "scale": [8, 32, 32],
             "latent_channels": 2}, "text_encoder": {"path": "t", "max_tokens": 4}, "precision": "float32",
             "buckets": [[9, 32, 32]], "max_upscale": 2.0, "items": items, "skipped": []}
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_latents_name_the_item_and_its_file(tmp_path, value):
    root = _cache(tmp_path / "c")
    bad = torch.zeros(2, 2, 1, 1)
    bad[1, 0] = value
    item = json.loads((root / "index.json").read_text())["items"][1]
    save_file({"latents": bad}, str(latent_file(root, "b")), {"item": json.dumps(item), "latent_space": "s"})
    cache = LatentCache(root)  # opening reads headers only
    assert cache[0]["latents"].shape == (2, 2, 1, 1)
    with pytest.raises(ValueError, match=rf"item b \(b.mp4\) holds NaN / inf in its latents; delete "
                                         rf"{latent_file(root, 'b')} and rerun python -m train.preprocess"):
        cache[1]


def test_non_finite_text_states_name_the_text_file(tmp_path):
    root = _cache(tmp_path / "c")
    save_file({"context": torch.full((4, 8), float("nan")), "mask": torch.ones(4, dtype=torch.int64)},
              str(text_file(root, "a")))
    with pytest.raises(ValueError, match=rf"item a \(a.mp4\) holds NaN / inf in its context; delete "
                                         rf"{text_file(root, 'a')}"):
        LatentCache(root)[0]
    save_file({"context": torch.full((4, 8), float("inf")), "mask": torch.ones(4, dtype=torch.int64)},
              str(text_file(root, NULL_ID)))
    with pytest.raises(ValueError, match=rf"item {NULL_ID} \(the empty caption\) holds NaN / inf"):
        LatentCache(root).null_text()


@pytest.mark.usefixtures("one_thread")
def test_finetune_stops_on_the_item_not_on_the_learning_rate(tmp_path, monkeypatch):
    """A real cache with one item's latents overwritten by NaN: training names it at its first batch."""
    pytest.importorskip("av")
    monkeypatch.setenv("WANDB_MODE", "offline")
    from ltx.core.media import write_mp4
    from ltx.data.shapes import ShapesWorld
    from ltx.presets import load_preset
    from train import finetune, preprocess

    data = ShapesWorld(split="train", num_samples=2, seed=8)
    rows = []
    for k in range(2):
        write_mp4(tmp_path / f"c{k}.mp4", (data[k].video + 1) / 2, 8)
        rows.append({"media_path": f"c{k}.mp4", "caption": data[k].caption})
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "cache"
    preprocess.run(preprocess.PreprocessConfig(data=str(tmp_path / "m.jsonl"), out=str(out), text_tokens=96))
    item = LatentCache(out).items[1]
    path = latent_file(out, item["id"])
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta, latents = f.metadata(), f.get_tensor("latents")
    save_file({"latents": torch.full_like(latents, float("nan"))}, str(path), meta)
    cfg = finetune.FinetuneConfig(model=load_preset("ltx-demo"), data=str(out), run_dir=str(tmp_path / "run"),
                                  steps=1, batch_size=2, wandb=False, threads=1,
                                  validation=finetune.ValidationSettings(from_data=0))
    with pytest.raises(ValueError, match=rf"item {item['id']} \({tmp_path / 'c1.mp4'}\) holds NaN / inf in its "
                                         "latents") as e:
        finetune.train(cfg)
    assert "lower lr" not in str(e.value)
