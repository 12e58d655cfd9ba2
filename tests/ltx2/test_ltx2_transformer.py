"""AVTransformer (ltx/ltx2/transformer.py) and LTX-2 RoPE (ltx/ltx2/rope.py) against ltx-core 1.0.0's LTXModel.

Tiny random-weight configs of both releases (19B-style and 2.3-style), fp32 and bf16, every perturbation
mode, video-only / audio-only / disabled-stream calls; RoPE tables against ltx-core's rope functions; the
full-size released configs built on `meta` in both; metadata parsing.
"""

from __future__ import annotations

import copy

import pytest
import torch
from ltx_core.guidance.perturbations import (
    BatchedPerturbationConfig,
    Perturbation,
    PerturbationConfig,
    PerturbationType,
)
from ltx_core.model.transformer import rope as ref_rope
from ltx_core.model.transformer.modality import Modality
from ltx_core.model.transformer.model_configurator import LTXModelConfigurator

from ltx.ltx2.rope import apply_rope, rope_table
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, Perturbations, StreamInput

# The released `config["transformer"]` (digest §2.1: 19B metadata; 2.3 adds the three flags).
META_19B = {
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
    "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
    "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
    "av_cross_ada_norm": True, "use_middle_indices_grid": True,
    "num_attention_heads": 32, "attention_head_dim": 128, "audio_num_attention_heads": 32,
    "audio_attention_head_dim": 64, "num_layers": 48, "in_channels": 128, "out_channels": 128,
    "audio_in_channels": 128, "audio_out_channels": 128, "cross_attention_dim": 4096,
    "audio_cross_attention_dim": 2048, "caption_channels": 3840, "norm_eps": 1e-06,
    "positional_embedding_theta": 10000.0, "positional_embedding_max_pos": [20, 2048, 2048],
    "audio_positional_embedding_max_pos": [20], "timestep_scale_multiplier": 1000,
    "av_ca_timestep_scale_multiplier": 1000.0, "rope_type": "split", "frequencies_precision": "float64",
    "causal_temporal_positioning": True,
}
META_23 = {**META_19B, "apply_gated_attention": True, "cross_attention_adaln": True,
           "caption_proj_before_connector": True}

B, F_LAT, H_LAT, W_LAT, T_AUDIO, S_TEXT = 2, 3, 2, 2, 5, 6


def tiny_config(v23: bool) -> AVTransformerConfig:
    # digest §7.1: video 2 x 8, audio 2 x 4, cross dims = widths, caption 12; distinct channel counts
    return AVTransformerConfig(
        num_layers=3, num_attention_heads=2, attention_head_dim=8, audio_num_attention_heads=2,
        audio_attention_head_dim=4, in_channels=32, out_channels=24, audio_in_channels=20, audio_out_channels=12,
        cross_attention_dim=16, audio_cross_attention_dim=8, caption_channels=12,
        apply_gated_attention=v23, cross_attention_adaln=v23, caption_proj_before_connector=v23,
    )


def randomize_(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g)
            if name.endswith(("q_norm.weight", "k_norm.weight")):
                p.copy_(1 + 0.2 * noise)  # near 1 so attention logits keep their RoPE structure
            elif "scale_shift_table" in name:
                p.copy_(0.2 * noise)
            else:
                p.copy_(0.15 * noise)
        for _, b in model.named_buffers():
            b.copy_(0.1 * torch.randn(b.shape, generator=g))


_MODELS: dict[bool, tuple[torch.nn.Module, AVTransformer]] = {}


def models(v23: bool) -> tuple[torch.nn.Module, AVTransformer]:
    """(reference LTXModel, ours) with the same random weights; the reference is built from our to_metadata()."""
    if v23 not in _MODELS:
        cfg = tiny_config(v23)
        with torch.device("meta"):
            ref = LTXModelConfigurator.from_config({"transformer": cfg.to_metadata()})
        ref = ref.to_empty(device="cpu")
        randomize_(ref, seed=1 + v23)
        ours = AVTransformer(cfg)
        ours.load_state_dict(ref.state_dict(), strict=True)
        _MODELS[v23] = (ref.eval(), ours.eval())
    return _MODELS[v23]


def make_inputs(cfg: AVTransformerConfig, seed: int = 0, dtype: torch.dtype = torch.float32) -> dict:
    g = torch.Generator().manual_seed(seed)
    T = F_LAT * H_LAT * W_LAT
    # video bounds as VideoLatentTools: pixel frames [8f-7, 8f+1) clamped at 0, / fps; pixels x32
    f, h, w = torch.meshgrid(torch.arange(F_LAT), torch.arange(H_LAT), torch.arange(W_LAT), indexing="ij")
    t0, t1 = (f * 8 - 7).clamp(min=0) / 24.0, (f * 8 + 1) / 24.0
    vpos = torch.stack([torch.stack([t0, t1], -1), torch.stack([h * 32, h * 32 + 32], -1),
                        torch.stack([w * 32, w * 32 + 32], -1)]).float().reshape(3, T, 2)
    vpos = vpos.expand(B, -1, -1, -1).clone()
    i = torch.arange(T_AUDIO)
    apos = (torch.stack([(4 * i - 3).clamp(min=0), 4 * i + 1], -1) * 0.01)[None, None].expand(B, 1, -1, -1).clone()

    v_sigma, a_sigma = torch.tensor([0.7, 0.3]), torch.tensor([0.55, 0.9])  # differ per row and per stream
    v_mask = torch.ones(B, T)
    v_mask[:, : H_LAT * W_LAT] = 0.0  # conditioned first frame
    a_mask = torch.ones(B, T_AUDIO)
    a_mask[1, :2] = 0.0
    ctx_w, actx_w = (cfg.inner_dim, cfg.audio_inner_dim) if cfg.caption_proj_before_connector else (12, 12)
    ctx_mask = torch.ones(B, S_TEXT, dtype=torch.long)
    ctx_mask[0, :2] = 0  # left padding
    ctx_mask[1, :1] = 0

    def self_mask(n: int) -> torch.Tensor:
        m = torch.rand(B, n, n, generator=g)
        m = torch.where(m < 0.25, torch.zeros(()), m)  # blocked entries and fractional weights
        return torch.maximum(m, torch.eye(n))

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g).to(dtype)

    return dict(
        video=dict(x=rnd(B, T, cfg.in_channels), timesteps=v_mask * v_sigma[:, None], sigma=v_sigma,
                   positions=vpos.to(dtype), context=rnd(B, S_TEXT, ctx_w), context_mask=ctx_mask,
                   attention_mask=self_mask(T)),
        audio=dict(x=rnd(B, T_AUDIO, cfg.audio_in_channels), timesteps=a_mask * a_sigma[:, None], sigma=a_sigma,
                   positions=apos, context=rnd(B, S_TEXT, actx_w), context_mask=ctx_mask,
                   attention_mask=self_mask(T_AUDIO)),
    )


def ref_modality(d: dict | None, enabled: bool = True) -> Modality | None:
    if d is None:
        return None
    return Modality(latent=d["x"], sigma=d["sigma"], timesteps=d["timesteps"], positions=d["positions"],
                    context=d["context"], enabled=enabled, context_mask=d["context_mask"],
                    attention_mask=d["attention_mask"])


def our_stream(d: dict | None, enabled: bool = True) -> StreamInput | None:
    return None if d is None else StreamInput(**d, enabled=enabled)


# Perturbation modes: per batch row a list of (type, blocks) as the reference takes them.
_V, _A = PerturbationType.SKIP_VIDEO_SELF_ATTN, PerturbationType.SKIP_AUDIO_SELF_ATTN
_A2V, _V2A = PerturbationType.SKIP_A2V_CROSS_ATTN, PerturbationType.SKIP_V2A_CROSS_ATTN
MODES = {
    "none": [[], []],
    "stg_block1": [[(_V, [1]), (_A, [1])]] * 2,
    "isolated": [[(_A2V, None), (_V2A, None)]] * 2,
    "mixed": [[(_V, [0, 2]), (_A, [0, 2])], [(_A2V, None), (_V2A, None), (_V, [2])]],
}


def ref_perturbations(rows: list) -> BatchedPerturbationConfig:
    return BatchedPerturbationConfig([PerturbationConfig([Perturbation(t, b) for t, b in row]) for row in rows])


def our_perturbations(mode: str, num_layers: int) -> Perturbations:
    # built with the public helpers, not from the reference's config
    L = num_layers
    if mode == "none":
        return Perturbations.none(L, B)
    if mode == "stg_block1":
        return Perturbations.stg(L, B, blocks=[1])
    if mode == "isolated":
        return Perturbations.isolate_modalities(L, B)
    return (Perturbations.stg(L, B, blocks=[0, 2], rows=[0]) & Perturbations.isolate_modalities(L, B, rows=[1])
            & Perturbations.stg(L, B, blocks=[2], rows=[1], audio=False))


def max_diff(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    assert (a is None) == (b is None)
    if a is None:
        return 0.0
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a.float() - b.float()).abs().max().item()


# ---------------------------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("v23", [False, True], ids=["19b", "2.3"])
@pytest.mark.parametrize("mode", list(MODES))
def test_forward_matches_reference(v23: bool, mode: str):
    ref, ours = models(v23)
    inp = make_inputs(ours.cfg)
    with torch.no_grad():
        rv, ra = ref(ref_modality(inp["video"]), ref_modality(inp["audio"]), ref_perturbations(MODES[mode]))
        ov, oa = ours(our_stream(inp["video"]), our_stream(inp["audio"]), our_perturbations(mode, 3))
    dv, da = max_diff(ov, rv), max_diff(oa, ra)
    print(f"{'2.3' if v23 else '19b'} {mode}: video {dv:.2e} audio {da:.2e} (output scale {rv.abs().max():.2f})")
    assert dv <= 1e-5 and da <= 1e-5
    if mode != "none":  # the perturbation must change something, or the comparison proves little
        with torch.no_grad():
            nv, _ = ours(our_stream(inp["video"]), our_stream(inp["audio"]))
        assert max_diff(nv, ov) > 1e-3


@pytest.mark.parametrize("v23", [False, True], ids=["19b", "2.3"])
@pytest.mark.parametrize("which", ["video_only", "audio_only", "audio_disabled", "video_disabled"])
def test_single_stream_calls_match_reference(v23: bool, which: str):
    ref, ours = models(v23)
    inp = make_inputs(ours.cfg, seed=3)
    vd = None if which == "audio_only" else inp["video"]
    ad = None if which == "video_only" else inp["audio"]
    v_on, a_on = which != "video_disabled", which != "audio_disabled"
    with torch.no_grad():
        rv, ra = ref(ref_modality(vd, v_on), ref_modality(ad, a_on), None)
        ov, oa = ours(our_stream(vd, v_on), our_stream(ad, a_on))
    assert (ov is None) == (vd is None) and (oa is None) == (ad is None)
    assert max_diff(ov, rv) <= 1e-5 and max_diff(oa, ra) <= 1e-5


@pytest.mark.parametrize("v23", [False, True], ids=["19b", "2.3"])
def test_bf16_matches_reference(v23: bool):
    ref, ours = models(v23)
    ref16, ours16 = copy.deepcopy(ref).to(torch.bfloat16), copy.deepcopy(ours).to(torch.bfloat16)
    assert ref16.video_args_preprocessor.simple_preprocessor.patchify_proj is ref16.patchify_proj  # copied whole
    inp = make_inputs(ours.cfg, seed=5, dtype=torch.bfloat16)  # video positions bf16 as in the pipelines
    for mode in ("none", "mixed"):
        with torch.no_grad():
            rv, ra = ref16(ref_modality(inp["video"]), ref_modality(inp["audio"]), ref_perturbations(MODES[mode]))
            ov, oa = ours16(our_stream(inp["video"]), our_stream(inp["audio"]), our_perturbations(mode, 3))
        dv, da = max_diff(ov, rv), max_diff(oa, ra)
        print(f"bf16 {'2.3' if v23 else '19b'} {mode}: video {dv:.2e} audio {da:.2e}")
        assert rv.dtype == torch.bfloat16 and dv == 0.0 and da == 0.0  # same ops in the same order: bitwise


def test_perturbation_helpers():
    p = Perturbations.stg(4, 3, blocks=[1, 3], rows=[0, 2], audio=False)
    assert p.video_self_attn[:, 0].tolist() == [1, 0, 1, 0] and p.video_self_attn[:, 1].tolist() == [1, 1, 1, 1]
    assert bool((p.audio_self_attn == 1).all()) and bool((p.a2v_cross_attn == 1).all())
    iso = Perturbations.isolate_modalities(4, 3, rows=[1])
    assert iso.v2a_cross_attn[:, 1].tolist() == [0] * 4 and bool((iso.v2a_cross_attn[:, [0, 2]] == 1).all())
    both = Perturbations.cat([Perturbations.none(4, 1), Perturbations.stg(4, 2, blocks=[0])])
    assert both.batch_size == 3 and both.video_self_attn[0].tolist() == [1, 0, 0]
    with pytest.raises(ValueError, match="out of range"):
        Perturbations.stg(4, 2, blocks=[4])
    _, ours = models(False)
    inp = make_inputs(ours.cfg)
    with pytest.raises(ValueError, match="2 blocks"):
        ours(our_stream(inp["video"]), our_stream(inp["audio"]), Perturbations.none(2, B))


# ---------------------------------------------------------------------------------------------------- rope


@pytest.mark.parametrize("layout", ["split", "interleaved"])
@pytest.mark.parametrize("float64_grid", [True, False], ids=["grid64", "grid32"])
@pytest.mark.parametrize("pos_dtype", [torch.float32, torch.bfloat16], ids=["pos32", "pos16"])
def test_rope_tables_match_reference(layout: str, float64_grid: bool, pos_dtype: torch.dtype):
    g = torch.Generator().manual_seed(0)
    cases = [  # (axes, dim, heads, max_pos): 19B video (pad 2), A<->V time-only, a tiny video width
        (3, 4096, 32, [20, 2048, 2048]), (1, 2048, 32, [20]), (3, 16, 2, [20, 2048, 2048])]
    for axes, dim, heads, max_pos in cases:
        start = torch.rand(2, axes, 7, generator=g) * torch.tensor(max_pos, dtype=torch.float32)[None, :, None]
        pos = torch.stack([start, start + torch.rand(start.shape, generator=g) * 4], -1).to(pos_dtype)
        grid_fn = ref_rope.generate_freq_grid_np if float64_grid else ref_rope.generate_freq_grid_pytorch
        rcos, rsin = ref_rope.precompute_freqs_cis(
            pos, dim=dim, out_dtype=torch.float32, theta=10000.0, max_pos=max_pos, use_middle_indices_grid=True,
            num_attention_heads=heads, rope_type=ref_rope.LTXRopeType(layout), freq_grid_generator=grid_fn)
        kind = ref_rope.LTXRopeType(layout)
        for dtype in (torch.float32, torch.bfloat16):  # bf16 activations: the same rounding as the reference
            table = rope_table(pos, dim=dim, num_heads=heads, max_pos=max_pos, theta=10000.0, layout=layout,
                               float64_grid=float64_grid, dtype=dtype)
            ref_table = (rcos.to(dtype), rsin.to(dtype))
            # ours (B, T, H, Dh/2) for split, the reference (B, H, T, Dh/2)
            ours_as_ref = [t.transpose(1, 2) if layout == "split" else t for t in (table.cos, table.sin)]
            assert all(torch.equal(o, r) for o, r in zip(ours_as_ref, ref_table)), (axes, dim, dtype)
            x = torch.randn(2, 7, dim, generator=g).to(dtype)
            assert torch.equal(apply_rope(x, table), ref_rope.apply_rotary_emb(x, ref_table, kind)), (axes, dim)


def test_rope_precision_matters():
    # bf16 positions and the fp32 grid each change the table: the parity above is not vacuous
    pos = torch.tensor([[[[3.3, 3.7]], [[1000.0, 1032.0]], [[517.0, 549.0]]]])  # (1, 3, 1, 2)
    kw = dict(dim=4096, num_heads=32, max_pos=[20, 2048, 2048], theta=10000.0, layout="split", dtype=torch.float32)
    base = rope_table(pos, float64_grid=True, **kw).cos
    assert not torch.equal(base, rope_table(pos.bfloat16(), float64_grid=True, **kw).cos)
    assert not torch.equal(base, rope_table(pos, float64_grid=False, **kw).cos)


# ---------------------------------------------------------------------------------------------------- full size


@pytest.mark.parametrize("meta,count", [(META_19B, 3510), (META_23, 4186)], ids=["19b", "2.3"])
def test_full_size_keys_and_shapes(meta: dict, count: int):
    with torch.device("meta"):
        ref = LTXModelConfigurator.from_config({"transformer": meta})
        ours = AVTransformer(AVTransformerConfig.from_metadata(meta))
    ref_shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    our_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert sorted(set(ref_shapes) ^ set(our_shapes)) == []
    assert ref_shapes == our_shapes
    assert len(our_shapes) == count


def test_presets_equal_released_metadata():
    assert AVTransformerConfig.ltx2_19b() == AVTransformerConfig.from_metadata(META_19B) == AVTransformerConfig()
    assert AVTransformerConfig.ltx2_3_22b() == AVTransformerConfig.from_metadata(META_23)


# ---------------------------------------------------------------------------------------------------- metadata


def test_metadata_round_trip():
    for cfg in (AVTransformerConfig.ltx2_19b(), AVTransformerConfig.ltx2_3_22b(), tiny_config(True)):
        meta = cfg.to_metadata()
        assert AVTransformerConfig.from_metadata(meta) == cfg
        ref = LTXModelConfigurator.from_config({"transformer": meta}) if cfg.num_layers < 10 else None
        if ref is not None:  # the reference reads our values back
            assert ref.rope_type.value == cfg.rope_type and ref.double_precision_rope
            assert ref.av_ca_timestep_scale_multiplier == cfg.av_ca_timestep_scale_multiplier
    fp32 = AVTransformerConfig(frequencies_precision="float32")
    assert AVTransformerConfig.from_metadata(fp32.to_metadata()).frequencies_precision == "float32"


@pytest.mark.parametrize("key,value,match", [
    ("rope_type", "rotary", r"transformer.rope_type='rotary' is not supported \(supported: \('split', 'interleaved'\)"),
    ("frequencies_precision", "bf16", "frequencies_precision='bf16' is not supported"),
    ("qk_norm", "layer_norm", r"transformer.qk_norm='layer_norm' is not supported \(supported: 'rms_norm'\)"),
    ("dropout", 0.1, "dropout=0.1 is not supported"),
    ("use_middle_indices_grid", False, "use_middle_indices_grid=False is not supported"),
    ("cross_attention_dim", 3840, "cross_attention_dim=3840 is not supported"),
    ("audio_num_attention_heads", 16, "audio_num_attention_heads=16 is not supported"),  # (head dim 128 below)
    ("positional_embedding_max_pos", [20, 2048], "positional_embedding_max_pos=\\[20, 2048\\] is not supported"),
    ("num_layers", -1, "num_layers=-1 is not supported"),
    ("apply_gated_attention", "yes", "apply_gated_attention='yes' is not supported"),
    ("attention_type", "sage", "attention_type='sage' is not supported"),
    ("av_ca_timestep_scale_multiplier", 0, "av_ca_timestep_scale_multiplier=0 is not supported"),
])
def test_metadata_refuses_bad_values(key: str, value, match: str):
    with pytest.raises(ValueError, match=match):
        extra = {"audio_attention_head_dim": 128} if key == "audio_num_attention_heads" else {}  # keep width 2048
        AVTransformerConfig.from_metadata({**META_19B, key: value, **extra})


@pytest.mark.parametrize("key", ["rope_type", "frequencies_precision", "av_ca_timestep_scale_multiplier",
                                 "attention_bias", "caption_channels"])
def test_metadata_refuses_missing_keys(key: str):
    meta = {k: v for k, v in META_19B.items() if k != key}
    with pytest.raises(ValueError, match=f"transformer.{key} is missing"):
        AVTransformerConfig.from_metadata(meta)


def test_float_context_mask_is_refused():
    _, ours = models(False)
    inp = make_inputs(ours.cfg)
    inp["video"]["context_mask"] = inp["video"]["context_mask"].float()
    with pytest.raises(TypeError, match="context_mask must be bool or integer"):
        ours(our_stream(inp["video"]), None)


@pytest.mark.parametrize("v23", [False, True])
def test_activation_checkpointing_gives_the_same_gradients(v23: bool):
    """Checkpointed blocks recompute from the stream records they were given: the forward must hand each block
    its own record (a mutated one recomputes from a later block's output: wrong gradients, no error)."""
    from ltx.core.parallel import apply_activation_checkpointing

    _, ours = models(v23)
    checkpointed = copy.deepcopy(ours)
    apply_activation_checkpointing(checkpointed)
    d = make_inputs(ours.cfg, seed=3)
    grads = []
    for model in (ours, checkpointed):
        model.zero_grad()
        v, a = model(our_stream(d["video"]), our_stream(d["audio"]))
        ((v**2).mean() + (a**2).mean()).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 10
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0]), \
        max((grads[0][n] - grads[1][n]).abs().max().item() for n in grads[0])
