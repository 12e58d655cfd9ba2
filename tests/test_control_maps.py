"""IC-LoRA control signals: ltx.core.control (native Canny, control-video layout, map checks), tools/make_control.py."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from ltx.core.control import canny, edges_to_video, hysteresis, maps_to_video

pytestmark = pytest.mark.usefixtures("one_thread")

H = W = 64


def rectangle() -> torch.Tensor:
    mask = torch.zeros(H, W, dtype=torch.bool)
    mask[14:47, 9:52] = True
    return mask


def circle() -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return (yy - 30.6) ** 2 + (xx - 33.3) ** 2 <= 19.0**2


def as_frames(mask: torch.Tensor, fg=(0.9, 0.6, 0.2), bg=(0.1, 0.2, 0.3)) -> torch.Tensor:
    """A (H, W) mask -> (3, 1, H, W) RGB in [0, 1]: colour fg inside, bg outside."""
    fg, bg = torch.tensor(fg).view(3, 1, 1), torch.tensor(bg).view(3, 1, 1)
    return torch.where(mask, fg, bg)[:, None]


def dilate(mask: torch.Tensor) -> torch.Tensor:
    """3x3 dilation (Chebyshev distance <= 1) of a (H, W) bool mask."""
    return F.max_pool2d(mask[None, None].float(), 3, stride=1, padding=1)[0, 0] > 0


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Pixels of the mask with a 4-neighbour outside it."""
    p = F.pad(mask, (1, 1, 1, 1))
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    return mask & ~inner


def has_3x3_block(edges: torch.Tensor) -> bool:
    return bool((F.conv2d(edges[None, None].float(), torch.ones(1, 1, 3, 3)) >= 9).any())


@pytest.mark.parametrize("shape", [rectangle, circle])
def test_canny_edges_are_on_the_boundary_thin_and_cover_it(shape):
    mask = shape()
    edges = canny(as_frames(mask))
    assert edges.shape == (1, H, W) and edges.dtype == torch.float32
    assert set(edges.unique().tolist()) <= {0.0, 1.0}
    e, b = edges[0].bool(), boundary(mask)
    assert not (e & ~dilate(b)).any(), "an edge pixel is more than 1 px from the boundary"
    assert not has_3x3_block(e)
    coverage = float((b & dilate(e)).sum() / b.sum())
    assert coverage >= 0.9, coverage


def test_canny_rectangle_sides_are_one_pixel_wide():
    e = canny(as_frames(rectangle()))[0].bool()
    assert e[18:43, 4:20].sum(dim=1).eq(1).all()  # left side: one edge pixel per row
    assert e[18:43, 42:60].sum(dim=1).eq(1).all()  # right side
    assert e[8:22, 14:47].sum(dim=0).eq(1).all()  # top side: one per column
    assert e[40:56, 14:47].sum(dim=0).eq(1).all()  # bottom side


def test_canny_constant_frames_have_no_edges():
    frames = torch.stack([torch.full((3, 16, 20), v) for v in (0.0, 0.37, 1.0)], dim=1)  # (3, 3, 16, 20)
    edges = canny(frames, low=0.0, high=0.0)
    assert edges.shape == (3, 16, 20)
    assert torch.isfinite(edges).all() and edges.sum() == 0
    almost = 0.5 + 1e-7 * torch.rand(3, 1, 16, 20, generator=torch.Generator().manual_seed(0))
    assert canny(almost, low=0.0, high=0.0).sum() == 0  # rounding-level noise is not normalised up to edges


def textured() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    noise = F.interpolate(torch.rand(1, 3, 8, 8, generator=g), size=(H, W), mode="bilinear", align_corners=False)[0]
    return (0.5 * noise + 0.5 * as_frames(circle())[:, 0]).clamp(0, 1)[:, None]  # (3, 1, H, W)


def test_canny_raising_low_never_adds_edges():
    frames = textured()
    previous = None
    for low in (0.0, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8):
        edges = canny(frames, low=low, high=0.8).bool()
        if previous is not None:
            assert not (edges & ~previous).any(), f"low={low} added edges"
        previous = edges
    assert canny(frames, low=0.05, high=0.8).sum() > canny(frames, low=0.8, high=0.8).sum() > 0


def test_canny_is_invariant_to_contrast_per_frame():
    frames = textured()
    base = canny(frames)
    assert base.sum() > 0
    assert torch.equal(canny(frames * 0.5), base)
    assert torch.equal(canny(0.25 + 0.5 * frames), base)
    both = canny(torch.cat([frames, frames * 0.5], dim=1))  # each frame normalised by its own strongest gradient
    assert torch.equal(both[0], base[0]) and torch.equal(both[1], base[0])


def test_hysteresis_keeps_weak_edges_connected_to_strong_ones_only():
    strong = torch.zeros(12, 12, dtype=torch.bool)
    weak = torch.zeros(12, 12, dtype=torch.bool)
    strong[2, 2] = True
    weak[3, 3] = weak[4, 4] = weak[4, 5] = weak[4, 6] = True  # diagonally, then horizontally connected to it
    weak[9, 1:6] = True  # a weak segment with no strong pixel
    weak[6, 8] = True  # two pixels away from the chain: not connected
    out = hysteresis(strong, weak)
    expected = strong.clone()
    expected[3, 3] = expected[4, 4] = expected[4, 5] = expected[4, 6] = True
    assert torch.equal(out, expected)
    assert torch.equal(hysteresis(strong[None].repeat(2, 1, 1), weak[None].repeat(2, 1, 1)), expected.repeat(2, 1, 1))
    assert not hysteresis(torch.zeros_like(strong), weak).any()
    with pytest.raises(ValueError, match="same shape"):
        hysteresis(strong, weak[:5])


def test_canny_keeps_a_weak_edge_only_through_a_strong_one():
    img = torch.zeros(H, W)
    img[:, 32:] = 1.0  # a strong vertical edge (full contrast)
    img[10:20, :32] = 0.55  # a weaker step that touches it
    img[45:55, 5:20] = 0.3  # an isolated weak rectangle
    frames = img.expand(3, 1, H, W)
    edges = canny(frames, low=0.2, high=0.8)[0].bool()
    assert edges[30:34, 31:33].any()  # the strong edge
    assert edges[9:11, 5:25].any()  # the connected weak step
    assert not edges[43:57, 3:22].any()  # the isolated one is dropped...
    assert canny(frames, low=0.2, high=0.2)[0].bool()[43:57, 3:22].any()  # ...but found as a strong edge


@pytest.mark.parametrize("kwargs, match", [
    (dict(low=0.9, high=0.8), r"low \(0.9\) must not exceed high"),
    (dict(low=-0.1), r"low must be a finite number in \[0.0, 1.0\]"),
    (dict(high=1.5), r"high must be a finite number in \[0.0, 1.0\]"),
    (dict(low=float("nan")), "finite"),
    (dict(sigma=0.0), "sigma must be a finite number > 0"),
    (dict(sigma=float("inf")), "sigma"),
])
def test_canny_rejects_bad_parameters(kwargs, match):
    with pytest.raises(ValueError, match=match):
        canny(torch.zeros(3, 1, 8, 8), **kwargs)


def test_canny_rejects_bad_frames():
    with pytest.raises(ValueError, match=r"permute\(1, 0, 2, 3\)"):
        canny(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"\(3, F, H, W\)"):
        canny(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="divide by 255"):
        canny(torch.zeros(3, 1, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match="NaN"):
        canny(torch.full((3, 1, 8, 8), float("nan")))
    with pytest.raises(ValueError, match=r"\(x \+ 1\) / 2"):
        canny(torch.full((3, 1, 8, 8), -1.0))


def test_canny_on_tiny_frames():
    frames = torch.zeros(3, 2, 3, 4)
    frames[:, :, :, 2:] = 1.0
    assert canny(frames, sigma=2.0).shape == (2, 3, 4)  # blur radius 6 > size: reflect padding still works


def test_edges_to_video():
    edges = torch.zeros(2, 4, 6)
    edges[:, 1, 2] = 1
    v = edges_to_video(edges)
    assert v.shape == (3, 2, 4, 6)
    assert v[:, :, 1, 2].eq(1).all() and v.sum() == 3 * 2 * (1 - 23)
    assert torch.equal(edges_to_video(edges.bool()), v)
    with pytest.raises(ValueError, match=r"\(F, H, W\)"):
        edges_to_video(edges[None])


def test_maps_to_video_shapes():
    depth = torch.rand(5, 8, 10)
    v = maps_to_video(depth)
    assert v.shape == (3, 5, 8, 10)
    assert torch.allclose(v, (depth * 2 - 1).expand(3, -1, -1, -1))
    assert torch.equal(maps_to_video(depth[None]), v)
    pose = torch.rand(3, 5, 8, 10)
    assert torch.allclose(maps_to_video(pose), pose * 2 - 1)
    assert maps_to_video(torch.full((1, 4, 4), 1 + 1e-7)).max() == 1.0  # within the tolerance: clamped


@pytest.mark.parametrize("maps, match", [
    (torch.full((2, 4, 4), float("nan")), "NaN / inf"),
    (torch.full((2, 4, 4), float("inf")), "NaN / inf"),
    (torch.full((2, 4, 4), 1.01), r"values in \[1.01, 1.01\]; valid values are in \[0, 1\]"),
    (torch.full((2, 4, 4), -0.5), r"\[0, 1\]"),
    (torch.full((2, 4, 4), 200.0), "divide by 255"),
    (torch.zeros(2, 4, 4, dtype=torch.uint8), "float tensor"),
    (torch.zeros(2, 2, 4, 4), r"\(3, F, H, W\) RGB"),
    (torch.zeros(4, 4), "shape"),
    (torch.zeros(0, 4, 4), "empty"),
])
def test_maps_to_video_rejects_bad_maps(maps, match):
    with pytest.raises(ValueError, match=match):
        maps_to_video(maps)


# ------------------------------------------------------------------------------------------------ the app


@pytest.fixture(scope="module")
def media():
    """The app's media libraries (PyAV, Pillow: the generate extra); skips without them."""
    pytest.importorskip("av")
    pytest.importorskip("PIL")


@pytest.fixture(scope="module")
def tool(media):
    from tools import make_control

    return make_control


@pytest.fixture(scope="module")
def clip(media, tmp_path_factory):
    """A 12-frame 64x64 mp4 at 8 fps: a bright square moving right on a dark background."""
    from ltx.core.media import write_mp4

    frames = torch.full((3, 12, H, W), 0.1)
    for f in range(12):
        frames[:, f, 20:40, 10 + 2 * f : 30 + 2 * f] = 0.9
    path = tmp_path_factory.mktemp("clip") / "clip.mp4"
    write_mp4(path, frames, fps=8)
    return path


def run_main(tool, capsys, *argv):
    """(exit status, stdout, stderr) of main(argv); usage errors exit through argparse's SystemExit."""
    try:
        rc = tool.main([str(a) for a in argv])
    except SystemExit as e:
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_canny_trims_to_8k_plus_1(tool, clip, tmp_path, capsys):
    from ltx.core.media import read_frames, read_image

    out = tmp_path / "sub" / "canny.mp4"
    rc, stdout, stderr = run_main(tool, capsys, "canny", clip, out)
    assert rc == 0, stderr
    assert "12 frames is not 8k + 1: keeping the first 9" in stderr
    assert stdout.count("\n") == 1 and "9 frames, 64x64, 8 fps, edge density" in stdout
    frames, fps = read_frames(out)
    assert frames.shape == (9, H, W, 3) and fps == pytest.approx(8)
    assert (frames > 128).float().mean() > 0.01  # white edges on black
    assert read_image(out.with_suffix(".png")).shape[0] == 3  # the contact sheet
    rc, _, stderr = run_main(tool, capsys, "canny", clip, out)  # exists: refused
    assert rc == 2 and stderr.startswith("error: ") and "--overwrite" in stderr and stderr.count("\n") == 1
    rc, _, stderr = run_main(tool, capsys, "canny", clip, out, "--overwrite", "--max-frames", "1", "--low", "0.2")
    assert rc == 0 and read_frames(out)[0].shape[0] == 1


def test_cli_depth_folder_of_pngs(tool, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from ltx.core.media import read_frames

    folder = tmp_path / "depth"
    folder.mkdir()
    ramp = np.linspace(0, 65535, H * W).reshape(H, W).astype(np.uint16)
    for i in range(9):
        Image.fromarray(ramp).save(folder / f"{i:03d}.png")  # 16-bit grayscale
    out = tmp_path / "depth.mp4"
    rc, stdout, stderr = run_main(tool, capsys, "depth", folder, out, "--fps", "24", "--invert")
    assert rc == 0, stderr
    assert "9 frames, 64x64, 24 fps" in stdout and stderr == ""
    frames = read_frames(out)[0].float()
    assert frames[0, 0].mean() > 240 and frames[0, -1].mean() < 15  # inverted: the dark top became bright


def test_cli_bad_input_is_one_line_and_status_2(tool, clip, tmp_path, capsys):
    from PIL import Image

    (tmp_path / "corrupt.mp4").write_bytes(b"not a video at all")
    (tmp_path / "empty").mkdir()
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("RGB", (32, 32)).save(mixed / "a.png")
    Image.new("RGB", (32, 30)).save(mixed / "b.png")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "o.mp4"
    cases = [
        (["canny", tmp_path / "missing.mp4", out], "not found"),
        (["canny", tmp_path / "corrupt.mp4", out], "unreadable or corrupt video"),
        (["depth", tmp_path / "empty", out], "no image files"),
        (["pose", mixed, out], "all frames must have the same size"),
        (["canny", clip, tmp_path / "afile" / "o.mp4"], "is a file"),
        (["canny", clip, tmp_path / "o.avi"], "ending in .mp4"),
        (["canny", clip, out, "--low", "0.9", "--high", "0.5"], "must not exceed high"),
        (["canny", clip, out, "--high", "2"], "outside [0, 1]"),
        (["canny", clip, out, "--low", "abc"], "not a number"),
        (["canny", clip, out, "--sigma", "0"], "> 0"),
        (["canny", clip], "required"),
    ]
    for argv, message in cases:
        rc, stdout, stderr = run_main(tool, capsys, *argv)
        assert rc == 2, (argv, stderr)
        assert stderr.startswith("error: ") and stderr.count("\n") == 1 and message in stderr, (argv, stderr)
        assert stdout == ""
    assert not out.exists() and not out.with_suffix(".png").exists()


def test_cli_script_runs_as_a_program(clip, tmp_path):
    """The file itself (its sys.path set-up, exit status, one-line error) under a fresh interpreter."""
    script = REPO / "tools" / "make_control.py"
    bad = subprocess.run([sys.executable, str(script), "canny", str(clip), str(tmp_path / "x.mp4"), "--low", "0.9"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and bad.stderr.count("\n") == 1, bad.stderr
    assert not (tmp_path / "x.mp4").exists()
