"""IC-LoRA control data for ShapesWorld: silhouettes and visible masks (ltx.data.shapes), the control-adherence
metric (ltx.data.shapes_eval.color_mask / mask_iou / control_iou) and the dataset writer
(tools/make_control_data.py).

Measured when written (60 scenes of ShapesWorld(split="all", seed=0)): control_iou of the ground truth mean
0.998 (min 0.98), after an H.264 round trip 0.974 (min 0.90), the dominant shape shifted 8 px 0.35 (max 0.46),
another scene's dominant shape in the same colour 0.10.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import load_tool as _tool  # noqa: E402

from ltx.data import shapes
from ltx.data.shapes import (
    BACKGROUNDS,
    COLORS,
    ConceptWorld,
    SceneParams,
    ShapeParams,
    ShapesWorld,
    render,
    render_silhouette,
    shape_masks,
)
from ltx.data.shapes_eval import color_mask, control_iou, mask_iou, read_mp4, write_mp4

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"

pytestmark = pytest.mark.usefixtures("one_thread")




def _old_render(params: SceneParams, frames: int = 17, height: int = 64, width: int = 64) -> torch.Tensor:
    """`render` as it was before the geometry moved into a shared helper (verbatim copy)."""
    shapes.check_video_size(frames, height, width)
    scale = min(height, width)
    video = torch.tensor(BACKGROUNDS[params.background]).view(3, 1, 1, 1).expand(3, frames, height, width)
    t = torch.linspace(0.0, 1.0, frames)
    ys = torch.arange(height, dtype=torch.float32) + 0.5
    xs = torch.arange(width, dtype=torch.float32) + 0.5
    for shape in reversed(params.shapes):
        cx = (shape.start[0] + t * (shape.end[0] - shape.start[0])) * width
        cy = (shape.start[1] + t * (shape.end[1] - shape.start[1])) * height
        dx = xs.view(1, 1, width) - cx.view(frames, 1, 1)
        dy = ys.view(1, height, 1) - cy.view(frames, 1, 1)
        sdf = shapes._signed_distance(shape.kind, dx, dy, shape.size * scale)
        alpha = (0.5 - sdf).clamp(0.0, 1.0)
        color = torch.tensor(COLORS[shape.color]).view(3, 1, 1, 1)
        video = video + alpha.unsqueeze(0) * (color - video)
    return video * 2.0 - 1.0


def _overlapping() -> SceneParams:
    """A static two-shape scene where the small square's left third is under the dominant circle."""
    return SceneParams((ShapeParams("red", "circle", "static", 0.18, (0.42, 0.5), (0.42, 0.5)),
                        ShapeParams("blue", "square", "static", 0.10, (0.62, 0.5), (0.62, 0.5))), "gray")


def _shifted(params: SceneParams, dx: float) -> SceneParams:
    """`params` with the dominant shape's path moved right by dx (fraction of the width)."""
    s = params.shapes[0]
    moved = replace(s, start=(s.start[0] + dx, s.start[1]), end=(s.end[0] + dx, s.end[1]))
    return replace(params, shapes=(moved, *params.shapes[1:]))


# ---------------------------------------------------------------------------------------------- rendering

@pytest.mark.parametrize("size", [(17, 64, 64), (9, 32, 96), (1, 64, 32)])
def test_render_is_bitwise_unchanged(size):
    scenes = [ShapesWorld(split=split, seed=seed).params(i) for split, seed in (("train", 0), ("all", 3))
              for i in range(6)]
    scenes += [ConceptWorld(seed=1).params(i) for i in range(3)] + [_overlapping()]
    assert any(len(p.shapes) == 2 for p in scenes) and any(p.background != "black" for p in scenes)
    for p in scenes:
        assert torch.equal(render(p, *size), _old_render(p, *size)), p


def test_silhouette_is_white_shapes_on_black_with_the_same_geometry():
    for p in [ShapesWorld(split="all", seed=0).params(i) for i in range(8)] + [_overlapping()]:
        sil = render_silhouette(p)
        masks = shape_masks(p)
        assert sil.shape == (3, 17, 64, 64) and sil.dtype == torch.float32
        assert sil.min() >= -1 and sil.max() <= 1
        assert torch.equal(sil[0], sil[1]) and torch.equal(sil[0], sil[2])  # grey levels only
        torch.testing.assert_close(sil[0], masks.sum(0) * 2 - 1, atol=1e-6, rtol=0)  # the union of the shapes
        assert (sil[0][masks.sum(0) == 0] == -1).all() and (sil[0][masks[0] == 1] == 1).all()
        # the coloured render has its background exactly where the silhouette is black
        rgb = (render(p) + 1) / 2
        bg = torch.tensor(BACKGROUNDS[p.background]).view(3, 1, 1)
        assert ((rgb - bg.unsqueeze(1)).abs().amax(0)[sil[0] == -1] < 1e-6).all()
    with pytest.raises(ValueError, match="multiple of 32"):
        render_silhouette(_overlapping(), 17, 60, 64)


def test_shape_masks_are_visible_coverage_dominant_first():
    p = _overlapping()
    masks = shape_masks(p, 9, 64, 64)
    assert masks.shape == (2, 9, 64, 64) and masks.dtype == torch.float32
    assert masks.min() >= 0 and masks.max() <= 1 and masks.sum(0).max() <= 1 + 1e-6
    dominant, second = masks[0] > 0.5, masks[1] > 0.5
    assert dominant.any() and second.any() and not (dominant & second).any()
    # the square's full area (alone in the scene) is larger than its visible part: the circle covers some
    alone = shape_masks(replace(p, shapes=p.shapes[1:]), 9, 64, 64)[0]
    assert alone.sum() > masks[1].sum() + 50 and ((alone > 0.5) & dominant).any()
    torch.testing.assert_close(masks[1], alone * (1 - masks[0]), atol=1e-6, rtol=0)
    # each visible mask shows its own colour in the render, exactly where it is 1
    rgb = (render(p, 9, 64, 64) + 1) / 2
    for m, shape in zip(masks, p.shapes):
        inside = m == 1
        assert inside.any()
        pixels = rgb[:, inside]  # (3, n)
        torch.testing.assert_close(pixels, torch.tensor(COLORS[shape.color]).view(3, 1).expand_as(pixels),
                                   atol=1e-6, rtol=0)
    # resolution-free and area as documented: the circle of radius 0.18 covers pi 0.18^2 of the frame
    for h, w in ((64, 64), (128, 128)):
        area = shape_masks(p, 1, h, w)[0].sum().item() / (h * w)
        assert math.isclose(area, math.pi * 0.18**2, rel_tol=0.02), (h, w, area)


# ---------------------------------------------------------------------------------------------- metric

def test_mask_iou():
    a = torch.zeros(3, 4, 4, dtype=torch.bool)
    b = a.clone()
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    a[1, 0, 0] = True  # frame 1: one empty mask; frame 2: both empty
    iou = mask_iou(a, b)
    assert iou.shape == (3,) and iou.dtype == torch.float32
    torch.testing.assert_close(iou, torch.tensor([4 / 12, 0.0, 1.0]))
    assert torch.equal(mask_iou(a, a), torch.ones(3))
    with pytest.raises(ValueError, match="differ in shape"):
        mask_iou(a, b[:2])


def test_color_mask_matches_the_silhouette_and_rejects_other_colours():
    p = _overlapping()
    video = render(p)
    red, blue = color_mask(video, "red"), color_mask(video, "blue")
    masks = shape_masks(p)
    assert red.shape == (17, 64, 64) and red.dtype == torch.bool
    assert mask_iou(red, masks[0] > 0.5).min() > 0.95
    # the square's visible part only; its edge on the circle (red-blue blends) may go to neither colour
    assert mask_iou(blue, masks[1] > 0.5).min() > 0.8
    assert not (red & blue).any() and not color_mask(video, "green").any()
    assert not color_mask(torch.full((3, 9, 32, 32), -1.0), "white").any()
    with pytest.raises(ValueError, match="unknown colour"):
        color_mask(video, "orange")
    with pytest.raises(ValueError, match=r"\(3, F, H, W\)"):
        color_mask(video[0], "red")
    # an extra colour (EXTRA_COLORS) works too
    cyan = SceneParams((ShapeParams("cyan", "square", "static", 0.18, (0.5, 0.5), (0.5, 0.5)),), "black")
    assert control_iou(render(cyan), cyan) > 0.95


def test_control_iou_ground_truth_and_h264(tmp_path):
    world = ShapesWorld(split="all", seed=0)
    clean, coded = [], []
    for i in range(6):
        p = world.params(i)
        video = render(p)
        clean.append(control_iou(video, p))
        write_mp4(tmp_path / f"{i}.mp4", video)
        coded.append(control_iou(read_mp4(tmp_path / f"{i}.mp4"), p))
    assert min(clean) >= 0.95, clean
    assert min(coded) >= 0.9 and sum(coded) / len(coded) >= 0.95, coded
    assert all(0.0 <= x <= 1.0 for x in clean + coded)
    # at another size, the same params describe the same scene
    p = world.params(0)
    assert control_iou(render(p, 9, 32, 96), p) >= 0.95


def test_control_iou_drops_for_the_wrong_geometry():
    world = ShapesWorld(split="all", seed=0)
    shifted, other = [], []
    for i in range(6):
        p = world.params(i)
        shifted.append(control_iou(render(_shifted(p, 8 / 64)), p))  # same scene, dominant shape 8 px right
        q = world.params(100 + i)  # another scene's dominant shape, recoloured to this one's colour
        q = replace(q, shapes=(replace(q.shapes[0], color=p.shapes[0].color),))
        other.append(control_iou(render(q), p))
    assert max(shifted) < 0.6 and sum(shifted) / 6 < 0.45, shifted
    assert sum(other) / 6 < 0.3, other
    p = world.params(0)  # a purple circle: a blank video, or the white silhouette itself, has no purple
    assert p.shapes[0].color == "purple"
    assert control_iou(torch.full((3, 17, 64, 64), -1.0), p) == 0.0
    assert control_iou(render_silhouette(p), p) == 0.0


# ---------------------------------------------------------------------------------------------- dataset writer

def test_make_control_data_writes_a_manifest_with_references(tmp_path):
    from ltx.data.manifest import read_dataset

    out = tmp_path / "ctl"
    manifest = _tool("make_control_data").make_control_data(out, num=3, num_concept=1)
    assert manifest == out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 4 and all(set(r) == {"media_path", "reference_path", "caption"} for r in rows)
    names = [Path(r["media_path"]).name for r in rows]
    assert names == ["base_0000.mp4", "base_0001.mp4", "base_0002.mp4", "concept_0000.mp4"]
    meta = json.loads((out / "control_data.json").read_text())
    assert (meta["num"], meta["num_concept"], meta["concept"], meta["seed"], meta["fps"]) == (3, 1, "up-right", 0, 8)
    assert sorted(p.name for p in out.iterdir()) == ["control_data.json", "controls", "manifest.jsonl", "videos"]
    base = ShapesWorld(split="train", seed=0)
    for row, clip in zip(rows, meta["clips"]):
        assert row["media_path"] == f"videos/{Path(row['media_path']).name}"
        assert row["reference_path"] == f"controls/{Path(row['media_path']).name}"
        assert row["caption"] == clip["caption"] and clip["media_path"] == row["media_path"]
        params = SceneParams(tuple(ShapeParams(**{**s, "start": tuple(s["start"]), "end": tuple(s["end"])})
                                   for s in clip["params"]["shapes"]), clip["params"]["background"])
        if clip["group"] == "base":
            assert params == base.params(clip["index"])
        else:
            assert params.shapes[0].motion == "up-right" and "upper right" in row["caption"]
        target, control = read_mp4(out / row["media_path"]), read_mp4(out / row["reference_path"])
        assert target.shape == control.shape == (3, 17, 64, 64)
        assert control_iou(target, params) > 0.9
        # the control is (nearly) white on the silhouette and black off it
        silhouette = shape_masks(params).sum(0)
        assert control[:, silhouette == 1].mean() > 0.9 and control[:, silhouette == 1].min() > 0.5
        assert control[:, silhouette == 0].mean() < -0.95
    items, skipped = read_dataset(manifest)
    assert not skipped and len(items) == 4
    assert [i.caption for i in items] == [r["caption"] for r in rows]
    assert [i.reference_path for i in items] == [(out / r["reference_path"]).resolve() for r in rows]
    assert all(i.reference_path.is_file() and i.media_path.is_file() for i in items)


def test_make_control_data_cli_refusals_and_determinism(tmp_path, capsys):
    mod = _tool("make_control_data")
    out = tmp_path / "a"
    assert mod.main([str(out), "--num", "2", "--frames", "9", "--height", "32", "--width", "32"]) == 0
    assert "wrote 2 base + 0" in capsys.readouterr().out
    first = (out / "manifest.jsonl").read_bytes(), (out / "control_data.json").read_bytes()
    for argv, message in (([str(out), "--num", "2"], "--overwrite"),
                          ([str(tmp_path / "b"), "--num", "0"], "at least one clip"),
                          ([str(tmp_path / "b"), "--height", "60"], "multiple of 32"),
                          ([str(tmp_path / "b"), "--fps", "0"], "fps"),
                          ([str(tmp_path / "b"), "--num", "x"], "invalid int")):
        with pytest.raises(SystemExit) as e:
            mod.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and ": error: " in err, err
    assert not (tmp_path / "b").exists()
    assert mod.main([str(out), "--num", "2", "--frames", "9", "--height", "32", "--width", "32",
                     "--overwrite"]) == 0
    assert ((out / "manifest.jsonl").read_bytes(), (out / "control_data.json").read_bytes()) == first
    assert len(list((out / "videos").glob("*.mp4"))) == len(list((out / "controls").glob("*.mp4"))) == 2
