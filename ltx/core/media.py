"""Reading and writing media files: videos (PyAV) and images (Pillow), in one place.

Conventions
- Colour: RGB, channel order R, G, B (never BGR).
- Float tensors are in [0, 1]: a video is (3, F, H, W), an image (3, H, W). `read_frames` alone returns the
  decoder's raw (F, H, W, 3) uint8. Callers that work in [-1, 1] (the VAE, ShapesWorld) map with x * 2 - 1.
- Videos are decoded from their first video stream; rotation metadata is ignored. fps is the stream's
  average rate (None when the container does not say).
- Any file that cannot be read raises `MediaError` (a ValueError) carrying the path and a one-line reason:
  missing, empty, unreadable / corrupt, no video stream, zero frames.
- Written videos are H.264 in yuv420p (H and W must be even), through PyAV.

PyAV and Pillow are imported inside the functions, so `import ltx` stays light.
"""

from __future__ import annotations

import io
import math
import os
import re
import textwrap
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor

from ltx.core.checkpoint import atomic_file

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".gif")


class MediaError(ValueError):
    """A media file that cannot be used; `path` and a one-line `reason`, str() = "path: reason"."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = Path(path), reason


def is_image(path: str | os.PathLike) -> bool:
    """True for the still-image extensions (IMAGE_EXTENSIONS, case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def is_video(path: str | os.PathLike) -> bool:
    """True for the video container extensions (VIDEO_EXTENSIONS, case-insensitive)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def _check_file(path: Path) -> None:
    if not path.is_file():
        raise MediaError(path, "file not found" if not path.exists() else "not a file")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file (0 bytes)")


# ------------------------------------------------------------------------------------------------ reading


def read_frames(path: str | os.PathLike, *, max_frames: int | None = None) -> tuple[Tensor, float | None]:
    """The first `max_frames` (default: all) frames of a video -> ((F, H, W, 3) uint8 RGB, fps or None)."""
    import av

    path = Path(path)
    _check_file(path)
    frames = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(path, "no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            for frame in container.decode(stream):
                frames.append(torch.from_numpy(frame.to_ndarray(format="rgb24")))
                if max_frames is not None and len(frames) >= max_frames:
                    break
    except av.FFmpegError as e:
        where = f" after {len(frames)} frames" if frames else ""
        raise MediaError(path, f"unreadable or corrupt video{where} ({type(e).__name__}: {e.strerror or e})") from None
    if not frames:
        raise MediaError(path, "no frames in the video stream")
    return torch.stack(frames), fps


def read_video(path: str | os.PathLike, *, max_frames: int | None = None) -> tuple[Tensor, float | None]:
    """The first `max_frames` (default: all) frames of a video -> ((3, F, H, W) float32 in [0, 1], fps or None)."""
    frames, fps = read_frames(path, max_frames=max_frames)
    return frames.permute(3, 0, 1, 2).float() / 255.0, fps  # (F, H, W, 3) -> (3, F, H, W)


def _open_image(path: str | os.PathLike):
    """The file as an RGB PIL image, fully loaded."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise MediaError(path, f"unreadable or corrupt image ({e})") from None


def _to_tensor(im) -> Tensor:
    """PIL RGB image -> (3, H, W) float32 in [0, 1]."""
    w, h = im.size
    return torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1).float() / 255.0


def read_image(path: str | os.PathLike) -> Tensor:
    """An image file -> (3, H, W) float32 RGB in [0, 1] (alpha dropped, palettes expanded)."""
    return _to_tensor(_open_image(path))


# ------------------------------------------------------------------------------------------------ conditioning images


def gaussian_blur3(x: Tensor, sigma: float = 1.0) -> Tensor:
    """3x3 Gaussian blur of (3, H, W) with reflect padding (torchvision `gaussian_blur(k=3, sigma)`)."""
    k = torch.exp(-0.5 * (torch.tensor([-1.0, 0.0, 1.0]) / sigma) ** 2)
    k = k / k.sum()
    kernel = (k[:, None] * k[None, :]).expand(3, 1, 3, 3)
    padded = torch.nn.functional.pad(x[None], (1, 1, 1, 1), mode="reflect")
    return torch.nn.functional.conv2d(padded, kernel, groups=3)[0]


def x264_options(crf: int, **options: str) -> dict[str, str]:
    """libx264 options with CRF `crf`. On CPUs with AVX-512, x264's instruction set is capped at AVX2: its AVX-512
    code wrote different bytes for the same frames from run to run (about 1 encode in 3 of a 17-frame 64x64 clip
    on a Sapphire Rapids VM, x264 core 165; AVX2 and plain C were bitwise stable), and a reproducible file is worth
    the few percent of encode speed."""
    opts = {"crf": str(crf), **options}
    if torch.backends.cpu.get_cpu_capability().startswith("AVX512"):  # every AVX-512 CPU has these
        opts["x264-params"] = "asm=MMX2,SSE2Fast,SSSE3,SSE4.2,AVX,FMA3,BMI2,AVX2,LZCNT"
    return opts


def crf_compress(x: Tensor, crf: int = 29) -> Tensor:
    """(H, W, 3) in [0, 1] through one H.264 frame (libx264, CRF `crf`, preset veryfast, yuv420p) and back;
    sizes are cropped to even, and values truncated to uint8, as the official `crf_compressor.compress`."""
    import av

    img = (x[: x.shape[0] // 2 * 2, : x.shape[1] // 2 * 2] * 255.0).to(torch.uint8).numpy()
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as c:
        stream = c.add_stream("libx264", rate=1, options=x264_options(crf, preset="veryfast"))
        stream.height, stream.width = img.shape[:2]
        c.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")))
        c.mux(stream.encode())
    with av.open(io.BytesIO(buf.getvalue())) as c:
        frame = next(c.decode(video=0)).to_ndarray(format="rgb24")
    return torch.from_numpy(frame).float() / 255.0


def load_image(path: str | os.PathLike, height: int, width: int, official: bool = True) -> Tensor:
    """A conditioning image -> (1, 3, 1, height, width) in [-1, 1]: center crop to the aspect ratio, resize
    (bicubic), and with `official` the inference script's blur + CRF-29 re-encoding (the models were trained
    on compressed video frames). Raises MediaError for unreadable files."""
    from PIL import Image

    im = _open_image(path)
    w, h = im.size
    target = width / height
    if w / h > target:  # too wide: crop the sides (int() as the official script)
        cw = int(h * target)
        im = im.crop(((w - cw) // 2, 0, (w - cw) // 2 + cw, h))
    else:
        ch = int(w / target)
        im = im.crop((0, (h - ch) // 2, w, (h - ch) // 2 + ch))
    x = _to_tensor(im.resize((width, height), Image.BICUBIC))  # (3, H, W)
    if official:
        x = crf_compress(gaussian_blur3(x).permute(1, 2, 0)).permute(2, 0, 1)
    return (x * 2.0 - 1.0)[None, :, None]  # (1, 3, 1, H, W)


# ------------------------------------------------------------------------------------------------ writing


def write_mp4(path: str | os.PathLike, frames: Tensor, fps: float, *, crf: int = 18) -> None:
    """frames (3, F, H, W) in [0, 1] -> H.264 mp4 (yuv420p, CRF `crf`); H and W must be even."""
    import av

    if frames.ndim != 4 or frames.shape[0] != 3:
        raise ValueError(f"expected frames of shape (3, F, H, W), got {tuple(frames.shape)}")
    H, W = frames.shape[2:]
    if H % 2 or W % 2:
        raise ValueError(f"yuv420p needs even sizes, got {H}x{W}")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be a positive number, got {fps}")
    _check_finite(frames, path)
    video = (frames.float().clamp(0, 1).permute(1, 2, 3, 0) * 255).round().to(torch.uint8).cpu().numpy()  # (F, H, W, 3)
    with atomic_file(path, "wb") as f, av.open(f, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = W, H
        stream.pix_fmt = "yuv420p"
        stream.options = x264_options(crf)
        for frame in video:  # converted here: the encoder's own rgb -> yuv path gives different bytes run to run
            yuv = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(format="yuv420p")
            container.mux(stream.encode(yuv))
        container.mux(stream.encode())


def write_contact_sheet(path: str | os.PathLike, frames: Tensor, count: int, caption: str, columns: int = 4) -> None:
    """A PNG grid of `count` evenly spaced frames of (3, F, H, W) in [0, 1], frame numbers under each, the
    caption on top."""
    from PIL import Image, ImageDraw

    _check_finite(frames, path)
    n = frames.shape[1]
    idx = sorted({round(i * (n - 1) / max(count - 1, 1)) for i in range(min(count, n))})
    H, W = frames.shape[2:]
    scale = min(1.0, 256 / max(H, W))
    th, tw = max(1, round(H * scale)), max(1, round(W * scale))
    cols = min(columns, len(idx))
    rows = -(-len(idx) // cols)
    lines = textwrap.wrap(caption, width=max(20, cols * tw // 7))[:4]
    top, label = 14 * len(lines) + 6, 14
    sheet = Image.new("RGB", (cols * tw, top + rows * (th + label)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, line in enumerate(lines):
        draw.text((4, 3 + 14 * k), line, fill="black")
    for k, i in enumerate(idx):
        img = (frames[:, i].clamp(0, 1).permute(1, 2, 0) * 255).round().to(torch.uint8).cpu().numpy()
        tile = Image.fromarray(img).resize((tw, th), Image.BILINEAR)
        x, y = (k % cols) * tw, top + (k // cols) * (th + label)
        sheet.paste(tile, (x, y))
        draw.text((x + 3, y + th + 1), f"frame {i}", fill="black")
    with atomic_file(path, "wb") as f:
        sheet.save(f, format="PNG")


def _check_finite(frames: Tensor, path) -> None:
    if not bool(torch.isfinite(frames).all()):
        raise MediaError(path, f"not written: the frames hold {int((~torch.isfinite(frames)).sum())} NaN / inf "
                               f"values")


def slug(text: str, limit: int = 40) -> str:
    """A file-name stem from a prompt: lower-case letters and digits joined by '_', at most `limit` characters
    ("video" when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:limit] or "video"
