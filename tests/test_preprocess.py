"""Fine-tuning data: manifests (ltx.data.manifest), preprocessing into a latent cache (train/preprocess.py) with
the bundled demo VAE and text encoder, the cache dataset and the bucket sampler (ltx.data.latent_cache)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import REPO

pytest.importorskip("av")
pytest.importorskip("PIL")
pytest.importorskip("hydra")
pytest.importorskip("transformers")

import train.preprocess as pre  # noqa: E402
from ltx.core.media import read_video, write_mp4  # noqa: E402
from ltx.data.buckets import Bucket, fit_to_bucket  # noqa: E402
from ltx.data.latent_cache import BucketBatchSampler, LatentCache, shard  # noqa: E402
from ltx.data.manifest import MediaItem, Skipped, read_dataset  # noqa: E402
from ltx.data.shapes import ShapesWorld  # noqa: E402
from ltx.ltxv.checkpoint import load_component  # noqa: E402
from train.train_vae import latent_space_id  # noqa: E402

CKPT, T5 = REPO / "demo/ltx-demo.safetensors", REPO / "demo/text_encoder"
# An mp4 `ftyp` box: followed by random bytes, a corrupt mp4 that every draw reports as unreadable (without it,
# about 1 draw in 300 parses as some container without a video stream).
MP4_HEADER = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"
HANG_GUARD_S = 600  # subprocess timeout: catches a hang, not slowness (a loaded CI machine is slow)


def save_png(path: Path, image: torch.Tensor) -> None:
    from PIL import Image

    Image.fromarray((image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(path)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A JSONL manifest over 3 good clips (two 64x64, one 64x96), a PNG, and one bad item of each kind."""
    d = tmp_path_factory.mktemp("data")
    (d / "clips").mkdir()
    square = ShapesWorld(num_samples=3, seed=0)
    wide = ShapesWorld(num_samples=1, width=96, seed=1)
    rows = []
    for i in range(2):
        s = square[i]
        write_mp4(d / f"clips/sq{i}.mp4", (s.video + 1) / 2, fps=8)
        rows.append({"media_path": f"clips/sq{i}.mp4", "caption": s.caption})
    write_mp4(d / "clips/wide.mp4", (wide[0].video + 1) / 2, fps=8)
    rows.append({"media_path": "clips/wide.mp4", "caption": wide[0].caption})
    save_png(d / "still.png", (square[2].video[:, 0] + 1) / 2)
    rows.append({"media_path": str(d / "still.png"), "caption": "a still image"})  # absolute path
    write_mp4(d / "short.mp4", (square[2].video[:, :5] + 1) / 2, fps=8)
    write_mp4(d / "tiny.mp4", torch.rand(3, 17, 16, 16, generator=torch.Generator().manual_seed(0)), fps=8)
    (d / "corrupt.mp4").write_bytes(MP4_HEADER + random.Random(0).randbytes(4096))  # seeded, see MP4_HEADER
    (d / "empty.mp4").write_bytes(b"")
    rows += [{"media_path": "short.mp4", "caption": "too short"}, {"media_path": "tiny.mp4", "caption": "too small"},
             {"media_path": "corrupt.mp4", "caption": "random bytes"}, {"media_path": "empty.mp4", "caption": "empty"},
             {"media_path": "gone.mp4", "caption": "not there"}, {"media_path": "clips/sq0.mp4", "caption": " "}]
    (d / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d / "manifest.jsonl"


GOOD = {"sq0.mp4": (17, 64, 64), "sq1.mp4": (17, 64, 64), "wide.mp4": (17, 64, 96), "still.png": (1, 64, 64)}
BAD = {"short.mp4": "too short: 5 frames, the shortest video bucket has 17", "tiny.mp4": "too small: 16x16",
       "corrupt.mp4": "unreadable or corrupt video", "empty.mp4": "empty file", "gone.mp4": "media file not found",
       "sq0.mp4": "no caption"}  # fmt: skip


def config(dataset: Path, out: Path, **kw) -> pre.PreprocessConfig:
    base = dict(data=str(dataset), out=str(out), checkpoint=str(CKPT), text_encoder=str(T5), text_tokens=32,
                buckets=["17x64x64;17x64x96", "1x64x64"], index_every=2)
    return pre.PreprocessConfig(**(base | kw))


@pytest.fixture(scope="module")
def cache(dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cache") / "c"
    pre.run(config(dataset, out))
    return out


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))
            if p.is_file()}  # fmt: skip


class Spy:
    """Counts the clips preprocessing decodes (pre.load_clip), optionally raising at call `fail_at`."""

    def __init__(self, monkeypatch, fail_at: int | None = None):
        self.calls, self.fail_at, real = 0, fail_at, pre.load_clip

        def load_clip(*a, **k):
            self.calls += 1
            if self.calls == self.fail_at:
                raise KeyboardInterrupt("killed")
            return real(*a, **k)

        monkeypatch.setattr(pre, "load_clip", load_clip)


# ---------------------------------------------------------------------------------------------- manifests


def test_manifest_formats_and_column_names(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.mp4", "b.mp4", "ref.mp4"):
        (tmp_path / "sub" / name).write_bytes(b"x")
    (tmp_path / "m.csv").write_text("video,text,reference_video\nsub/a.mp4, a cat ,sub/ref.mp4\nsub/b.mp4,,\n")
    items, skipped = read_dataset(tmp_path / "m.csv")  # LTX-Video-Trainer column names
    assert items == [MediaItem(tmp_path / "sub/a.mp4", "a cat", tmp_path / "sub/ref.mp4")]
    assert skipped == [Skipped(tmp_path / "sub/b.mp4", "no caption (m.csv row 2: 'text' is missing or empty)")]
    (tmp_path / "m.json").write_text(json.dumps([{"video_path": "sub/a.mp4", "prompt": "p"},
                                                 {"video_path": "sub/none.mp4", "prompt": "q"}]))  # fmt: skip
    items, skipped = read_dataset(tmp_path / "m.json")
    assert items == [MediaItem(tmp_path / "sub/a.mp4", "p")]
    assert skipped == [Skipped(tmp_path / "sub/none.mp4", "media file not found")]
    (tmp_path / "sub/m.jsonl").write_text('{"media_path": "a.mp4", "caption": "c"}\n\n')  # relative to its folder
    assert read_dataset(tmp_path / "sub/m.jsonl")[0] == [MediaItem(tmp_path / "sub/a.mp4", "c")]


def test_manifest_errors_are_one_line(tmp_path):
    cases = {
        "cols.csv": ("file,caption\na.mp4,x\n", r"no media column; found \['file', 'caption'\], accepted: media_path, "
                     "video, video_path"),
        "nocap.jsonl": ('{"video": "a.mp4"}\n', r"no caption column; found \['video'\], accepted: caption, text"),
        "empty.csv": ("media_path,caption\n", r"empty manifest \(no rows\)"),
        "empty.json": ("[]", r"empty manifest"),
        "bad.jsonl": ('{"video": "a.mp4", "text": "x"}\n{"video": oops}\n', r"bad.jsonl: malformed JSON at line 2"),
        "bad.json": ('[\n{"video": "a.mp4",\n]', r"bad.json: malformed JSON at line 3"),
        "dict.json": ('{"video": "a.mp4"}', "must be a list of objects"),
        "m.txt": ("a.mp4", r"unsupported manifest type '.txt'"),
    }  # fmt: skip
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ValueError, match=message):
            read_dataset(tmp_path / name)
    with pytest.raises(FileNotFoundError, match="dataset .*nowhere.jsonl does not exist"):
        read_dataset(tmp_path / "nowhere.jsonl")


def test_folder_dataset(tmp_path):
    for name in ("a.mp4", "b.png", "c.mp4", "notes.md"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "a.txt").write_text("a red circle\n")
    (tmp_path / "c.txt").write_text("  ")
    items, skipped = read_dataset(tmp_path)
    assert items == [MediaItem(tmp_path / "a.mp4", "a red circle")]
    assert skipped == [Skipped(tmp_path / "b.png", "no caption: b.txt not found"),
                       Skipped(tmp_path / "c.mp4", "no caption: c.txt is empty")]  # fmt: skip
    (tmp_path / "sub").mkdir()
    with pytest.raises(ValueError, match="no image or video files"):
        read_dataset(tmp_path / "sub")


# ---------------------------------------------------------------------------------------------- preprocessing


def test_preprocess_caches_good_items_and_reports_bad_ones(cache, dataset):
    from ltx.ltxv.checkpoint import load_component
    from train.train_vae import latent_space_id

    index = json.loads((cache / "index.json").read_text())
    assert index["complete"] and index["version"] == 1
    assert {Path(it["media_path"]).name: tuple(it["bucket"]) for it in index["items"]} == GOOD
    reasons = {Path(s["path"]).name: s["reason"] for s in index["skipped"]}
    assert reasons.keys() == BAD.keys() and all(reasons[k].startswith(v) for k, v in BAD.items()), reasons
    vae = load_component(CKPT, "vae")
    assert index["vae"] | {"checkpoint": None} == {"checkpoint": None, "latent_space": latent_space_id(vae),
                                                   "scale": [8, 8, 8], "latent_channels": 16}  # fmt: skip

    data = LatentCache(cache)
    assert len(data) == 4 and data.latent_space == latent_space_id(vae)
    shapes = {Path(it["media_path"]).name: data[i]["latents"].shape for i, it in enumerate(data.items)}
    assert shapes == {"sq0.mp4": (16, 3, 8, 8), "sq1.mp4": (16, 3, 8, 8), "wide.mp4": (16, 3, 8, 12),
                      "still.png": (16, 1, 8, 8)}  # fmt: skip
    assert data.buckets == {(17, 64, 64): [0, 1], (17, 64, 96): [2], (1, 64, 64): [3]}
    assert data.buckets_list == [(17, 64, 64), (17, 64, 96), (1, 64, 64)] and data.scale == (8, 8, 8)
    assert [data.latent_shape(b) for b in data.buckets_list] == [shapes["sq0.mp4"], shapes["wide.mp4"],
                                                                 shapes["still.png"]]  # fmt: skip
    assert data.latent_channels == 16 and data.text_channels == 128
    item = data[0]
    assert item["caption"] == ShapesWorld(num_samples=1, seed=0)[0].caption and item["fps"] == 8.0
    assert item["context"].shape == (32, 128) and item["mask"].shape == (32,) and item["mask"].dtype == torch.int64
    null_context, null_mask = data.null_text()
    assert null_context.shape == (32, 128) and null_mask.sum() == 1  # "" is one end-of-sequence token

    # the cached latents are the VAE's posterior mean of the decoded, fitted clip; the text the T5's embedding
    from ltx.ltxv.text import T5TextEncoder

    video, _ = read_video(dataset.parent / "clips/wide.mp4")
    with torch.no_grad():
        expected = vae.encode(fit_to_bucket(video, Bucket(17, 64, 96))[None] * 2 - 1)[0]
    torch.testing.assert_close(data[2]["latents"], expected, rtol=0, atol=1e-6)
    context, mask = T5TextEncoder(T5, dtype=torch.float32, max_tokens=32).encode([data[2]["caption"]])
    torch.testing.assert_close(data[2]["context"], context[0], rtol=0, atol=1e-6)
    assert torch.equal(data[2]["mask"], mask[0])


def test_rerun_does_no_work_and_changes_nothing(cache, dataset, monkeypatch, capsys):
    before = snapshot(cache)
    spy = Spy(monkeypatch)

    def no_t5(*a, **k):
        raise AssertionError("the text encoder was loaded although every caption is cached")

    monkeypatch.setattr("ltx.ltxv.text.T5TextEncoder", no_t5)
    pre.run(config(dataset, cache))
    assert spy.calls == 4  # no cached clip is decoded again; the 4 bad media files are tried again (cheap)
    after = snapshot(cache)
    assert after.keys() == before.keys()
    assert all(after[k] == before[k] for k in after if k != "index.json")  # not even rewritten
    assert after["index.json"][0] == before["index.json"][0]
    out = capsys.readouterr().out
    assert "4 items cached (0 clips and 0 captions encoded this run), 6 skipped" in out
    assert "short.mp4" in out and "too short" in out  # the summary table


def test_killed_run_resumes_to_the_same_cache(cache, dataset, tmp_path, monkeypatch):
    out = tmp_path / "c"
    spy = Spy(monkeypatch, fail_at=3)
    with pytest.raises(KeyboardInterrupt):
        pre.run(config(dataset, out))
    assert len(list((out / "latents").iterdir())) == 2 and not json.loads((out / "index.json").read_text())["complete"]
    with pytest.raises(ValueError, match="preprocessing did not finish"):
        LatentCache(out)
    spy.fail_at, spy.calls = None, 0
    pre.run(config(dataset, out))
    assert spy.calls == 6  # the 2 clips done are not decoded again (the 6 others: 2 good, 4 bad)
    assert snapshot(out).keys() == snapshot(cache).keys()
    assert all(snapshot(out)[k][0] == v[0] for k, v in snapshot(cache).items() if k != "index.json")
    a, b = (json.loads((p / "index.json").read_text()) for p in (out, cache))
    assert a["items"] == b["items"] and a["skipped"] == b["skipped"]

    # a subset first, then the full set: only the new items are encoded
    subset = dataset.with_name("subset.jsonl")
    subset.write_text("".join(dataset.read_text().splitlines(keepends=True)[:2]))
    out2 = tmp_path / "c2"
    pre.run(config(subset, out2))
    spy.calls = 0
    pre.run(config(dataset, out2))
    assert spy.calls == 8 - 2 and len(LatentCache(out2)) == 4


def test_bfloat16_precision_caches_in_the_float32_latent_space(cache, dataset, tmp_path):
    """precision=bfloat16 (a documented option) once always crashed hashing the bf16 VAE; its latents now live in
    the same latent space as the float32 run's (the id the training apps compute from the float32 VAE)."""
    out = tmp_path / "bf16"
    pre.run(config(dataset, out, precision="bfloat16"))
    bf16, fp32 = LatentCache(out), LatentCache(cache)
    assert bf16.latent_space == fp32.latent_space and len(bf16) == len(fp32)
    assert latent_space_id(load_component(CKPT, "vae", dtype=torch.float32)) == bf16.latent_space


def test_incompatible_rerun_is_refused(cache, dataset, tmp_path):
    from ltx.ltxv.checkpoint import checkpoint_from_modules, load_component, write_ltx

    before = snapshot(cache)
    with pytest.raises(ValueError, match=r"made differently: text encoder .*'max_tokens': 32.* vs .*'max_tokens': 64"
                                         r".*overwrite=true"):  # fmt: skip
        pre.run(config(dataset, cache, text_tokens=64))
    vae = load_component(CKPT, "vae")
    with torch.no_grad():
        vae.encoder.conv_in.conv.weight.mul_(1.01)  # another encoder: another latent space
    other = tmp_path / "other.safetensors"
    write_ltx(checkpoint_from_modules({"vae": vae}), other)
    with pytest.raises(ValueError, match=r"made differently: VAE latent space \w+ .* vs \w+ .*other.safetensors"):
        pre.run(config(dataset, cache, checkpoint=str(other)))
    assert snapshot(cache) == before

    out = tmp_path / "c"
    shutil.copytree(cache, out)
    index = pre.run(config(dataset, out, checkpoint=str(other), overwrite=True))
    assert index["vae"]["latent_space"] != json.loads((cache / "index.json").read_text())["vae"]["latent_space"]
    assert len(LatentCache(out)) == 4 and len(list((out / "latents").iterdir())) == 4


@pytest.mark.parametrize("kw, message", [
    (dict(buckets=[]), "no buckets given"),
    (dict(buckets=["16x64x60"]), r"bucket 16x64x60: frames 16 is not 8k \+ 1 \(nearest: 9 or 17\); width 60 .*"
                                 r"\(nearest: 56 or 64\)"),
    (dict(data=None), "no data given"),
    (dict(data="/nonexistent/manifest.jsonl"), "data /nonexistent/manifest.jsonl does not exist"),
    (dict(checkpoint="/nonexistent/ckpt.safetensors"), "checkpoint /nonexistent/ckpt.safetensors does not exist"),
    (dict(text_encoder="/nonexistent/t5"), "text encoder /nonexistent/t5 does not exist"),
    (dict(precision="fp8"), "precision 'fp8' is not one of"),
])  # fmt: skip
def test_bad_config_fails_before_writing(dataset, tmp_path, kw, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        pre.run(config(dataset, tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists()


def test_cli(dataset, tmp_path):
    """The Hydra app: a one-line error for bad input, and a cache from the bundled demo defaults."""
    run = [sys.executable, "-m", "train.preprocess", f"out={tmp_path}/c"]
    r = subprocess.run(run + [f"data={tmp_path}/none.jsonl"], cwd=REPO, capture_output=True, text=True,
                       timeout=HANG_GUARD_S)  # fmt: skip
    assert r.returncode == 1 and r.stderr.strip().splitlines() == [f"error: data {tmp_path}/none.jsonl does not exist"]
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps({"video": str(dataset.parent / "clips/sq0.mp4"), "text": "a clip"}) + "\n")
    r = subprocess.run(run + [f"data={small}", "buckets=[9x64x64]"], cwd=REPO, capture_output=True, text=True,
                       timeout=HANG_GUARD_S)  # fmt: skip
    assert r.returncode == 0, r.stderr
    data = LatentCache(tmp_path / "c")
    assert data[0]["latents"].shape == (16, 2, 8, 8) and data[0]["context"].shape == (96, 128)  # demo: 96 tokens
    assert not (REPO / "preprocess.log").exists()  # Hydra writes nothing


# ---------------------------------------------------------------------------------------------- the sampler


def test_bucket_sampler_epochs_buckets_and_determinism():
    sizes, G = [5, 3, 8, 1], 4
    s = BucketBatchSampler(sizes, global_batch=G, seed=7)
    assert s.batches_per_epoch == 2 + 1 + 2 + 1
    bucket_of = {i: b for b, (lo, n) in enumerate(zip([0, 5, 8, 16], sizes)) for i in range(lo, lo + n)}
    for epoch in range(3):
        batches = [s.batch(epoch * s.batches_per_epoch + k) for k in range(s.batches_per_epoch)]
        assert all(len(b) == G and len({bucket_of[i] for i in b}) == 1 for b in batches)  # single-bucket
        counts = Counter(i for b in batches for i in b)
        assert set(counts) == set(range(17))  # every item, every epoch
        for b, n in enumerate(sizes):  # once each, plus the wrap fill of that bucket's last batch
            items = [i for i in counts if bucket_of[i] == b]
            assert sum(counts[i] for i in items) == -(-n // G) * G
            assert all(counts[i] == 1 for i in items) or n % G
    steps = range(0, 3 * s.batches_per_epoch)
    forward = [s.batch(k) for k in steps]
    fresh = BucketBatchSampler(sizes, global_batch=G, seed=7)
    assert [fresh.batch(k) for k in reversed(steps)][::-1] == forward  # any call order, any instance
    assert forward[:6] != forward[6:12]  # epochs are reshuffled
    assert [BucketBatchSampler(sizes, global_batch=G, seed=8).batch(k) for k in steps] != forward
    mapped = BucketBatchSampler({"a": [10, 11], "b": [12, 13, 14]}, global_batch=2, seed=0)
    assert all(set(mapped.batch(k)) <= {10, 11} or set(mapped.batch(k)) <= {12, 13, 14} for k in range(9))


def test_shard():
    batch = list(range(8))
    assert [shard(batch, r, 4) for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert sum((shard(batch, r, 2) for r in range(2)), []) == batch
    with pytest.raises(ValueError, match="not divisible by world size 3"):
        shard(batch, 0, 3)
    with pytest.raises(ValueError, match=r"rank 4 is not in \[0, 4\)"):
        shard(batch, 4, 4)
    with pytest.raises(ValueError, match="at least one non-empty bucket"):
        BucketBatchSampler([0, 0], global_batch=2, seed=0)


def test_out_device_and_max_upscale_are_checked_before_anything_is_written(tmp_path):
    from train import preprocess

    (tmp_path / "a.txt").write_text("x")
    base = dict(data=str(tmp_path), text_tokens=96)
    for kw, words in [(dict(out=str(tmp_path / "a.txt")), "is a file; pass a folder"),
                      (dict(out=str(tmp_path / "a.txt" / "c")), "is a file, not a folder"),
                      (dict(out=str(tmp_path / "c"), device="tpu"), "device='tpu' is invalid"),
                      (dict(out=str(tmp_path / "c"), max_upscale=float("nan")), "max_upscale must be >= 1")]:
        with pytest.raises(ValueError, match=words):
            preprocess.check_config(preprocess.PreprocessConfig(**base, **kw))
    assert not (tmp_path / "c").exists()
