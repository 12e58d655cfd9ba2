"""ltx.core.media (video / image IO with clear errors) and ltx.data.buckets (bucket sizes, choice and fitting)."""

from __future__ import annotations

import math
import random
import wave

import pytest
import torch

pytest.importorskip("av")
pytest.importorskip("PIL")

from ltx.core.media import (  # noqa: E402
    MediaError,
    is_image,
    is_video,
    load_image,
    read_frames,
    read_image,
    read_video,
    write_contact_sheet,
    write_mp4,
)
from ltx.data import shapes_eval  # noqa: E402
from ltx.data.buckets import Bucket, choose_bucket, fit_to_bucket, no_bucket_reason, parse_buckets  # noqa: E402
from ltx.data.shapes import ShapesWorld  # noqa: E402

# An mp4 `ftyp` box: followed by random bytes, a corrupt mp4 that every draw reports as unreadable (without it,
# about 1 draw in 300 parses as some container without a video stream).
MP4_HEADER = b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2"


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    """A ShapesWorld clip (3, 17, 64, 64) in [0, 1]."""
    return (ShapesWorld(num_samples=1, seed=0)[0].video + 1) / 2


def save_png(path, image: torch.Tensor) -> None:
    from PIL import Image

    Image.fromarray((image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()).save(path)


# ---------------------------------------------------------------------------------------------- reading / writing


def test_video_round_trip(tmp_path, clip):
    write_mp4(tmp_path / "a.mp4", clip, fps=8)
    video, fps = read_video(tmp_path / "a.mp4")
    assert video.shape == (3, 17, 64, 64) and video.dtype == torch.float32 and fps == 8.0
    assert 0 <= video.min() and video.max() <= 1
    assert (video - clip).abs().mean() < 0.02  # H.264 at CRF 18; measured ~0.006
    frames, _ = read_frames(tmp_path / "a.mp4", max_frames=5)
    assert frames.shape == (5, 64, 64, 3) and frames.dtype == torch.uint8
    assert torch.equal(frames.permute(3, 0, 1, 2).float() / 255, video[:, :5])  # the same decode, two layouts
    write_mp4(tmp_path / "b.mp4", clip, fps=30000 / 1001)
    assert read_video(tmp_path / "b.mp4")[1] == pytest.approx(29.97, abs=1e-2)


def test_shapes_eval_names_are_thin_wrappers(tmp_path, clip):
    shapes_eval.write_mp4(tmp_path / "s.mp4", clip * 2 - 1)  # [-1, 1], 8 fps
    write_mp4(tmp_path / "m.mp4", clip, fps=8)
    assert (tmp_path / "s.mp4").read_bytes() == (tmp_path / "m.mp4").read_bytes()
    torch.testing.assert_close(shapes_eval.read_mp4(tmp_path / "s.mp4"), read_video(tmp_path / "m.mp4")[0] * 2 - 1)


def test_unreadable_videos_name_the_file_and_the_reason(tmp_path, clip):
    (tmp_path / "random.mp4").write_bytes(MP4_HEADER + random.Random(0).randbytes(4000))  # seeded, see MP4_HEADER
    (tmp_path / "empty.mp4").write_bytes(b"")
    write_mp4(tmp_path / "good.mp4", clip, fps=8)
    data = (tmp_path / "good.mp4").read_bytes()
    (tmp_path / "truncated.mp4").write_bytes(data[: len(data) // 2])
    with wave.open(str(tmp_path / "audio.wav"), "wb") as w:  # a readable file without a video stream
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000), w.writeframes(b"\0\0" * 800)
    cases = {"random.mp4": "unreadable or corrupt video", "empty.mp4": r"empty file \(0 bytes\)",
             "truncated.mp4": "unreadable or corrupt", "audio.wav": "no video stream",
             "missing.mp4": "file not found"}  # fmt: skip
    for name, reason in cases.items():
        with pytest.raises(MediaError, match=reason) as e:
            read_video(tmp_path / name)
        assert str(e.value).startswith(str(tmp_path / name)) and e.value.path == tmp_path / name
        assert isinstance(e.value, ValueError) and "\n" not in str(e.value)


def test_images(tmp_path):
    g = torch.Generator().manual_seed(0)
    image = torch.rand(3, 40, 60, generator=g)
    save_png(tmp_path / "a.png", image)
    got = read_image(tmp_path / "a.png")
    assert got.shape == (3, 40, 60) and torch.equal(got, (image * 255).round() / 255)  # PNG is lossless
    cond = load_image(tmp_path / "a.png", 32, 32, official=False)  # centre crop 40x40, resize to 32x32
    assert cond.shape == (1, 3, 1, 32, 32) and -1 <= cond.min() and cond.max() <= 1
    assert load_image(tmp_path / "a.png", 32, 48).shape == (1, 3, 1, 32, 48)  # blur + CRF path
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(MediaError, match=r"bad.png: unreadable or corrupt image"):
        read_image(tmp_path / "bad.png")
    assert is_image("x/A.PNG") and is_image("b.jpeg") and not is_image("c.mp4")
    assert is_video("a.MP4") and is_video("b.webm") and not is_video("c.png") and not is_video("d.txt")


def test_write_errors_and_contact_sheet(tmp_path, clip):
    with pytest.raises(ValueError, match="even sizes"):
        write_mp4(tmp_path / "odd.mp4", clip[:, :, :63], fps=8)
    with pytest.raises(ValueError, match=r"\(3, F, H, W\)"):
        write_mp4(tmp_path / "bad.mp4", clip[0], fps=8)
    write_contact_sheet(tmp_path / "sheet.png", clip, 4, "a caption")
    sheet = read_image(tmp_path / "sheet.png")
    assert sheet.shape[1:] == (20 + 64 + 14, 4 * 64)  # one caption line, one row of 4 tiles with labels


# ---------------------------------------------------------------------------------------------- buckets


def test_parse_buckets_validates_against_the_vae_factors():
    assert parse_buckets("17x64x64;9x64x96", 8, 8) == [Bucket(17, 64, 64), Bucket(9, 64, 96)]
    assert parse_buckets(["17x64x64", [1, 32, 32]], 8, 32) == [Bucket(17, 64, 64), Bucket(1, 32, 32)]
    with pytest.raises(ValueError, match=r"frames 16 is not 8k \+ 1 \(nearest: 9 or 17\).*width 60 is not a "
                                         r"positive multiple of 8 \(nearest: 56 or 64\)"):  # fmt: skip
        parse_buckets("16x64x60", 8, 8)
    with pytest.raises(ValueError, match=r"height 48 is not a positive multiple of 32 \(nearest: 32 or 64\)"):
        parse_buckets("17x48x64", 8, 32)  # the released VAEs' factor
    with pytest.raises(ValueError, match=r"height 16 .*nearest: 32\)"):
        parse_buckets("17x16x64", 8, 32)
    with pytest.raises(ValueError, match="no buckets given"):
        parse_buckets([], 8, 8)
    with pytest.raises(ValueError, match="not FRAMESxHEIGHTxWIDTH"):
        parse_buckets("17x64", 8, 8)
    with pytest.raises(ValueError, match="listed twice"):
        parse_buckets("17x64x64;17x64x64", 8, 8)


def test_choose_bucket():
    buckets = parse_buckets("17x64x64;9x64x64;17x64x96;1x64x64;1x128x128", 8, 8)
    assert choose_bucket(30, 64, 64, buckets) == (17, 64, 64)  # same aspect: more frames wins
    assert choose_bucket(12, 64, 64, buckets) == (9, 64, 64)  # 17 do not fit
    assert choose_bucket(30, 360, 640, buckets) == (17, 64, 96)  # 16:9 is closest to 3:2
    assert choose_bucket(1, 200, 200, buckets) == (1, 128, 128)  # an image: 1-frame buckets only, larger area
    assert choose_bucket(5, 64, 64, buckets) is None  # a video shorter than every video bucket
    assert no_bucket_reason(5, 64, 64, buckets) == "too short: 5 frames, the shortest video bucket has 9"
    assert choose_bucket(5, 64, 64, buckets[3:]) == (1, 128, 128)  # image-only buckets: its first frame
    assert no_bucket_reason(1, 64, 64, buckets[:3]).startswith("an image, and no bucket has 1 frame")
    assert choose_bucket(17, 16, 16, buckets, max_upscale=2) is None  # would need x4
    assert no_bucket_reason(17, 16, 16, buckets, max_upscale=2).startswith("too small: 16x16 would need upscaling x4")
    assert choose_bucket(17, 32, 48, buckets, max_upscale=2) == (17, 64, 96)


def test_fit_to_bucket_covers_and_centre_crops():
    x = torch.arange(2 * 64 * 128, dtype=torch.float32).view(1, 2, 64, 128).expand(3, -1, -1, -1)  # (3, 2, 64, 128)
    out = fit_to_bucket(x, Bucket(1, 64, 64))  # no resize, crop the centre columns
    assert out.shape == (3, 1, 64, 64) and torch.equal(out, x[:, :1, :, 32:96])
    ramp = torch.linspace(0, 1, 96).expand(3, 9, 48, 96)  # a horizontal ramp, 48 x 96
    out = fit_to_bucket(ramp, Bucket(9, 32, 32))  # scale 2/3 -> 32 x 64, crop 16 px each side
    assert out.shape == (3, 9, 32, 32)
    assert math.isclose(out.mean().item(), 0.5, abs_tol=0.01) and out[..., 0].max() > 0.2  # the centre half
    up = fit_to_bucket(torch.rand(3, 17, 16, 24), Bucket(17, 32, 32))  # upscale x2 to 32 x 48, crop
    assert up.shape == (3, 17, 32, 32)
    with pytest.raises(ValueError, match="shorter than bucket 17x32x32"):
        fit_to_bucket(torch.rand(3, 9, 32, 32), Bucket(17, 32, 32))
