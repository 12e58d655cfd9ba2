"""New concepts for fine-tuning experiments: ShapesWorld's opt-in extras, the extended evaluator, the dataset
writer (tools/make_concept_data.py) and the experiment's evaluator (tools/eval_concept.py).

The extras must leave every existing sample, caption and detection bitwise as it was: the bundled demo model and
tests/test_shapes.py depend on them. The hashes below were recorded before the extras existed, except the two
circles': the circle's distance now takes an IEEE square root (numpy) instead of torch's MKL one, whose last bit
differed between CPUs (AVX2 / AVX-512); they were re-recorded then, and hold on every machine.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
import torch
from conftest import load_tool as _tool  # noqa: E402

from ltx.data.shapes import (
    CONCEPTS,
    EXTRA_COLORS,
    EXTRA_MOTION_PHRASES,
    KINDS,
    PALETTE,
    TINTS,
    VOCABULARY,
    ConceptWorld,
    ShapeSpec,
    ShapesWorld,
    caption,
    concept_extras,
    parse_caption,
    unknown_words,
)
from ltx.data.shapes_eval import DetectorConfig, concept_config, detect, evaluate, noise_video, read_mp4, write_mp4

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / "tools"


pytestmark = pytest.mark.usefixtures("one_thread")




def _sha(t: torch.Tensor) -> str:
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------- unchanged

# (split, seed, index) -> (video sha256[:16], repr(params) sha256[:16], caption), recorded before the extras
RECORDED = {
    ("train", 0, 0): ("651a3b97df80a53e", "d11e4c165536bc10", "a purple circle moves to the right"),
    ("train", 0, 7): ("e0ff9ab55a4b8ac5", "1b1758b37b0b6fea", "a white triangle moves up on a gray background"),
    ("heldout", 3, 5): ("2c11a47fba761a7e", "99ce1d79586d8108",
                        "a red circle moves to the left and a green triangle moves to the left"),
    ("all", 1234, 42): ("1d26a163cc67d88b", "78272119e36e3d12",
                        "a yellow triangle moves down and a red square moves to the left on a navy background"),
    ("all", 9, 11): ("61a2384e3c9b61fb", "d0526bfcc4ac3d58",
                     "a purple square moves to the right and a green square moves to the right on a gray background"),
}
# detect() with the default config on smooth noise (generator seed 5, four draws), recorded before the extras
RECORDED_NOISE = [
    "Detection(color='yellow', motion='right', displacement=(0.6145833333333334, 0.4080882352941177), "
    "area=0.09943704307079315, compactness=0.8381488463457893)",
    "Detection(color='green', motion='right', displacement=(0.4699754901960784, -0.09681372549019608), "
    "area=0.11715877801179886, compactness=0.6449581761570538)",
    "Detection(color='red', motion='up', displacement=(0.22487745098039214, -0.7947303921568627), "
    "area=0.11486098170280457, compactness=0.7248982296270483)",
    "Detection(color='yellow', motion='down', displacement=(-0.18566176470588236, 0.37193627450980393), "
    "area=0.10614372789859772, compactness=0.6091819966540617)",
]


def test_existing_samples_are_bitwise_unchanged():
    for (split, seed, index), (video_sha, params_sha, text) in RECORDED.items():
        s = ShapesWorld(split=split, seed=seed)[index]
        assert _sha(s.video) == video_sha and s.caption == text
        assert hashlib.sha256(repr(s.params).encode()).hexdigest()[:16] == params_sha


def test_default_detection_is_bitwise_unchanged():
    g = torch.Generator().manual_seed(5)
    assert [repr(detect(noise_video(17, 64, 64, smooth=True, generator=g))) for _ in range(4)] == RECORDED_NOISE


def test_default_vocabulary_and_grammar_exclude_the_extras():
    for word in ("cyan", "upper"):
        assert word not in VOCABULARY
    text = "a red circle moves to the upper right and a cyan square stays still"
    with pytest.raises(ValueError, match=r"\['upper', 'cyan'\]"):
        parse_caption(text)
    assert unknown_words(text) == ["upper", "cyan"]
    assert unknown_words(text, ["cyan"], ["up-right"]) == []
    spec = parse_caption(text, extra_colors=["cyan"], extra_motions=["up-right"])
    assert spec.shapes == (ShapeSpec("red", "circle", "up-right"), ShapeSpec("cyan", "square", "static"))
    assert caption(spec) == text
    with pytest.raises(ValueError, match="unknown extra colour 'pink'"):
        parse_caption(text, extra_colors=["pink"])
    with pytest.raises(ValueError, match="unknown shape color 'pink'"):
        ShapeSpec("pink", "circle", "left")
    with pytest.raises(ValueError, match="unknown concept"):
        ConceptWorld(concept="red")


def test_new_colour_is_far_from_the_palette_and_backgrounds():
    # in RGB as far as the palette's own closest pair (0.62), and in the detector's chroma space
    chroma = lambda c: torch.tensor(c) / max(c)  # noqa: E731
    for rgb in EXTRA_COLORS.values():
        for other in PALETTE.values():
            assert math.dist(rgb, other) >= 0.6 and (chroma(rgb) - chroma(other)).norm() >= 0.6
        for tint in TINTS.values():
            assert math.dist(rgb, tint) >= 0.9


# ---------------------------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("concept", CONCEPTS)
def test_concept_world_is_seeded_and_shows_the_concept(concept):
    colors, motions = concept_extras(concept)
    a, b = ConceptWorld(concept=concept, seed=3), ConceptWorld(concept=concept, seed=3)
    later = b[20].video  # access order must not matter
    assert torch.equal(a[20].video, later)
    assert not torch.equal(a[0].video, ConceptWorld(concept=concept, seed=4)[0].video)
    assert a[0].params != ShapesWorld(split="all", seed=3)[0].params  # its own random stream
    kinds = set()
    for i in range(60):
        s = a[i]
        dom = s.params.shapes[0]
        assert (dom.color in colors) if colors else (dom.color in PALETTE)
        assert (dom.motion in motions) if motions else (dom.motion not in EXTRA_MOTION_PHRASES)
        for other in s.params.shapes[1:]:  # the distractor is a familiar training triple
            assert other.color in PALETTE and other.motion not in EXTRA_MOTION_PHRASES and other.color != dom.color
        assert parse_caption(s.caption, colors, motions) == s.params.spec
        kinds.add(dom.kind)
        for shape in s.params.shapes:  # boxes stay inside the frame
            for c in (*shape.start, *shape.end):
                assert shape.size <= c <= 1 - shape.size
        if motions:  # the diagonal moves as far right as up
            dx, dy = dom.end[0] - dom.start[0], dom.end[1] - dom.start[1]
            assert dx > 0.24 and math.isclose(dx, -dy, abs_tol=1e-9)
    assert kinds == set(KINDS)


# ---------------------------------------------------------------------------------------------- evaluator

@pytest.mark.parametrize("concept", CONCEPTS)
def test_extended_detector_is_right_on_ground_truth(concept, tmp_path):
    cfg = concept_config(concept)
    world = ConceptWorld(concept=concept, seed=7)
    samples = [(str(i), world[i].video, world[i].caption) for i in range(60)]
    summary = evaluate(samples, cfg).summary()
    assert summary["concept"]["n"] == 60 and summary["seen"]["n"] == 0
    assert summary["concept"]["color"] == summary["concept"]["motion"] == 1.0, summary  # measured 100%
    for name, video, _ in samples[:16]:  # and through H.264
        write_mp4(tmp_path / f"{name}.mp4", video)
    decoded = [(n, read_mp4(tmp_path / f"{n}.mp4"), c) for n, _, c in samples[:16]]
    assert evaluate(decoded, cfg).summary()["concept"]["both"] == 1.0
    # the default detector does not parse the new words: the items are skipped, not scored
    assert len(evaluate(samples[:5]).skipped) == 5


def test_extended_detector_keeps_base_ground_truth():
    cfg = concept_config(*CONCEPTS)
    world = ShapesWorld(split="train", seed=7)
    samples = [(str(i), world[i].video, world[i].caption) for i in range(60)]
    report = evaluate(samples, cfg)
    assert report.summary()["seen"]["both"] == 1.0 and report.summary()["concept"]["n"] == 0
    default = evaluate(samples)
    assert [r.detection for r in report.items] == [r.detection for r in default.items]


def test_diagonal_rule_only_changes_its_own_sector():
    cfg = DetectorConfig(extra_motions=("up-right",))
    from ltx.data.shapes_eval import _nearest_direction

    for deg in range(0, 360, 5):
        dx, dy = math.cos(math.radians(deg)), -math.sin(math.radians(deg))  # deg counter-clockwise, y down
        got = _nearest_direction(dx, dy, cfg.extra_motions)
        if 22.5 < deg < 67.5:
            assert got == "up-right", deg
        else:
            axis = ("right" if dx > 0 else "left") if abs(dx) >= abs(dy) else ("down" if dy > 0 else "up")
            assert got == axis, deg


# ---------------------------------------------------------------------------------------------- dataset writer

def _make(tmp_path, name, **kw):
    mod = _tool("make_concept_data")
    return mod.make_concept_data(tmp_path / name, num_concept=6, num_base=3, **kw)


def test_make_concept_data_writes_a_manifest_that_parses(tmp_path):
    manifest = _make(tmp_path, "a")
    out = manifest.parent
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 9 and all(set(r) == {"media_path", "caption"} for r in rows)
    meta = json.loads((out / "concept_data.json").read_text())
    assert meta["concept"] == "up-right" and meta["seed"] == 0 and meta["fps"] == 8
    cfg = concept_config("up-right")
    scored = []
    for row, clip in zip(rows, meta["clips"]):
        path = out / row["media_path"]
        assert not Path(row["media_path"]).is_absolute() and path.parent == out / "videos" and path.is_file()
        assert row["caption"] == clip["caption"]
        video = read_mp4(path)
        assert video.shape == (3, 17, 64, 64)
        scored.append((path.name, video, row["caption"]))
    summary = evaluate(scored, cfg).summary()
    assert summary["concept"]["n"] == 6 and summary["seen"]["n"] == 3 and summary["all"]["both"] == 1.0
    try:
        from ltx.data.manifest import read_dataset
    except ImportError:  # the trainer's reader, when present
        return
    items, skipped = read_dataset(manifest)
    assert not skipped and [i.caption for i in items] == [r["caption"] for r in rows]


def test_make_concept_data_folder_layout_and_refusals(tmp_path):
    out = _make(tmp_path, "f", layout="folder", concept="cyan")
    mp4s = sorted(out.glob("*.mp4"))
    assert len(mp4s) == 9 and not (out / "manifest.jsonl").exists()
    for p in mp4s:
        assert p.with_suffix(".txt").read_text().strip()
    assert sum("cyan" in p.with_suffix(".txt").read_text() for p in mp4s) == 6
    with pytest.raises(FileExistsError, match="--overwrite"):
        _make(tmp_path, "f")
    _make(tmp_path, "f", overwrite=True)  # replaces the folder
    assert not any("cyan" in p.read_text() for p in out.glob("*.txt"))


def test_make_concept_data_is_deterministic(tmp_path):
    a, b = _make(tmp_path, "a"), _make(tmp_path, "b")
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "concept_data.json").read_bytes() == (b.parent / "concept_data.json").read_bytes()
    c = _make(tmp_path, "c", seed=1)
    assert a.read_bytes() != c.read_bytes()


def test_make_concept_data_mp4_bytes_are_deterministic(tmp_path):
    a, b = _make(tmp_path, "a"), _make(tmp_path, "b")
    for p in sorted((a.parent / "videos").glob("*.mp4")):
        assert p.read_bytes() == (b.parent / "videos" / p.name).read_bytes(), p.name


# ---------------------------------------------------------------------------------------------- experiment evaluator

def test_eval_concept_smoke(tmp_path):
    """The whole evaluator on the bundled demo, tiny (2 steps, 2 prompts per group); then against itself."""
    mod = _tool("eval_concept")
    data = _make(tmp_path, "data").parent
    common = ["--n-concept", "2", "--n-base", "2", "--n-i2v", "2", "--steps", "2", "--batch", "2", "--threads", "1",
              "--train-data", str(data)]
    assert mod.main([*common, "--out", str(tmp_path / "a")]) == 0
    report = json.loads((tmp_path / "a" / "report.json").read_text())
    assert report["n"] == {"concept": 2, "base": 2, "i2v": 4}
    assert report["concept"]["score"] == "motion" and report["concept"]["ceiling"] == 1.0
    assert 15 < report["i2v"]["psnr"] < 60 and len(list((tmp_path / "a" / "i2v_base").glob("*_first.png"))) == 2
    assert report["train_data"]["train_seed"] == 0 and report["train_data"]["concept_novel_captions"]["n"] <= 2
    assert (tmp_path / "a" / "row.md").read_text().count("\n") == 3
    assert mod.main([*common, "--out", str(tmp_path / "b"), "--baseline", str(tmp_path / "a" / "report.json")]) == 0
    again = json.loads((tmp_path / "b" / "report.json").read_text())
    assert all(abs(d) < 1e-9 for d in again["comparison"]["delta"].values())  # generation is deterministic
    with pytest.raises(SystemExit):  # the training data's own seed is refused
        mod.main([*common, "--seed", "0", "--out", str(tmp_path / "c")])


def test_apply_loras_matches_the_adapted_model(tmp_path):
    from ltx.ltxv.checkpoint import load_dit
    from ltx.ltxv.lora import LoRAConfig, inject_lora, save_lora

    mod = _tool("eval_concept")
    ckpt = REPO / "demo/ltx-demo.safetensors"
    adapted = load_dit(ckpt)
    inject_lora(adapted, LoRAConfig(rank=4, targets=("attn2.to_q", "attn2.to_k")), generator=torch.Generator()
                .manual_seed(0))
    with torch.no_grad():
        for name, p in adapted.named_parameters():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1)))
    path = save_lora(tmp_path / "lora.safetensors", adapted)
    merged = mod.apply_loras(load_dit(ckpt), [{"path": path, "strength": 0.5}])
    plain = load_dit(ckpt)
    from ltx.ltxv.lora import set_strength

    set_strength(adapted, "default", 0.5)
    assert not [name for name, _ in merged.named_parameters() if "lora" in name]  # merged and removed
    x = torch.randn(1, 12, plain.cfg.in_channels)
    ctx = torch.randn(1, 5, plain.cfg.caption_channels)
    args = (x, torch.full((1,), 0.5), ctx, torch.ones(1, 5, dtype=torch.long), torch.rand(1, 3, 12))
    with torch.no_grad():
        out_merged, out_adapted, out_plain = merged(*args), adapted(*args), plain(*args)
    assert torch.allclose(out_merged, out_adapted, atol=1e-5) and not torch.allclose(out_merged, out_plain, atol=1e-4)
