"""The native DiT against the official `Transformer3DModel` (ltx-video 0.1.2) and diffusers'
`LTXVideoTransformer3DModel`, with random weights saved in each format and loaded through our converter.

Measured (torch 2.13 CPU, 2 threads): fp32 max |diff| vs official = 0.0 with global timesteps, both widths
(the same ops in the same order). Per-token timesteps are embedded once per distinct value where the official
embeds every token: the case below happens to round identically, but random repeated sigmas (as every
pipeline call has) differ by up to 1.9e-6 (6 seeds, both widths). The bound is 1e-5 on every block output
and on the final output, so that BLAS builds that block GEMMs differently still pass.
bf16: both implementations round at the same points except q/k RMSNorm (the official rounds x/rms to bf16
before the weight multiply, torch's RMSNorm rounds once): measured max |diff| 0.031-0.047 on outputs of
magnitude 4-5, i.e. 1-1.5 bf16 ulps there (ulp = 0.03125 in [4, 8)); bound 0.0625 = 2 ulps.
"""

from __future__ import annotations

import glob
import json

import pytest
import torch
from conftest import REPO, TINY, dit_inputs, official_dit, official_dit_file, randomize_

from ltx.ltxv.checkpoint import load_dit
from ltx.ltxv.keys_official import dit_config_to_official
from ltx.ltxv.transformer import DiT, STGMode

ltx_video = pytest.importorskip("ltx_video")
from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy  # noqa: E402

pytestmark = pytest.mark.parity
FP32_ATOL = 1e-5
BF16_ATOL = 0.0625

STRATEGIES = {
    STGMode.attention_values: SkipLayerStrategy.AttentionValues,
    STGMode.attention_skip: SkipLayerStrategy.AttentionSkip,
    STGMode.residual: SkipLayerStrategy.Residual,
    STGMode.transformer_block: SkipLayerStrategy.TransformerBlock,
}


def _block_outputs(model, blocks_attr="transformer_blocks"):
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o if torch.is_tensor(o) else o[0]))
             for b in getattr(model, blocks_attr)]
    return outs, hooks


def _official_pair(tmp_path, name, seed=0):
    cfg = TINY[name]
    ref = randomize_(official_dit(cfg), seed).eval()
    ours = load_dit(official_dit_file(tmp_path / "official.safetensors", ref))
    assert ours.cfg == cfg
    return cfg, ref, ours


def _official_forward(ref, x, sigma, ctx, mask, pos, **kw):
    return ref(x, pos, encoder_hidden_states=ctx, timestep=sigma, encoder_attention_mask=mask, return_dict=False,
               **kw)[0]


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("per_token", [False, True], ids=["global_t", "per_token_t"])
def test_matches_official_fp32(tmp_path, name, per_token):
    cfg, ref, ours = _official_pair(tmp_path, name)
    grid = (3, 5, 7)  # odd latent grid, T = 105
    x, ctx, mask, pos = dit_inputs(cfg, batch=3, grid=grid)
    T = x.shape[1]
    if per_token:  # conditioning-style: first-frame tokens at 0, the rest at the step's sigma
        sigma = torch.tensor([0.9, 0.5, 0.25])[:, None].expand(3, T).clone()
        sigma[:, : grid[1] * grid[2]] = 0.0
    else:
        sigma = torch.tensor([[0.9], [0.5], [0.25]])
    ref_blocks, h1 = _block_outputs(ref)
    our_blocks, h2 = _block_outputs(ours)
    with torch.no_grad():
        expected = _official_forward(ref, x, sigma, ctx, mask, pos)
        actual = ours(x, sigma, ctx, mask, pos)
    for h in h1 + h2:
        h.remove()
    assert len(our_blocks) == len(ref_blocks) == cfg.num_layers
    for i, (a, e) in enumerate(zip(our_blocks, ref_blocks)):
        torch.testing.assert_close(a, e, atol=FP32_ATOL, rtol=0, msg=lambda m, i=i: f"block {i}: {m}")
    torch.testing.assert_close(actual, expected, atol=FP32_ATOL, rtol=0)
    assert expected.abs().max() > 0.5  # a real signal, not a degenerate all-zero output


def test_text_mask_matters(tmp_path):
    """Padding must change the output (else the mask test above could pass with the mask ignored)."""
    cfg, ref, ours = _official_pair(tmp_path, "w64")
    x, ctx, mask, pos = dit_inputs(cfg, batch=3)
    sigma = torch.full((3, 1), 0.7)
    with torch.no_grad():
        masked = ours(x, sigma, ctx, mask, pos)
        unmasked = ours(x, sigma, ctx, torch.ones_like(mask), pos)
    assert torch.equal(masked[0], unmasked[0])  # row 0 has no padding
    assert (masked[1:] - unmasked[1:]).abs().max() > 1e-3


@pytest.mark.parametrize("mode", list(STGMode), ids=lambda m: m.value)
def test_stg_matches_official(tmp_path, mode):
    cfg, ref, ours = _official_pair(tmp_path, "w64")
    x, ctx, mask, pos = dit_inputs(cfg, batch=3, grid=(2, 3, 5))
    sigma = torch.tensor([[0.8], [0.8], [0.8]])
    skip = torch.ones(cfg.num_layers, 3)
    skip[1, 2] = 0  # block 1 perturbed for the third row only (uncond, cond, perturbed layout)
    with torch.no_grad():
        expected = _official_forward(ref, x, sigma, ctx, mask, pos, skip_layer_mask=skip,
                                     skip_layer_strategy=STRATEGIES[mode])
        actual = ours(x, sigma, ctx, mask, pos, skip_mask=skip, stg_mode=mode)
        plain = ours(x, sigma, ctx, mask, pos)
    torch.testing.assert_close(actual, expected, atol=FP32_ATOL, rtol=0)
    torch.testing.assert_close(actual[:2], plain[:2], atol=0, rtol=0)  # unperturbed rows untouched
    if mode is STGMode.residual:  # official no-op for this architecture
        torch.testing.assert_close(actual[2], plain[2], atol=0, rtol=0)
    else:
        assert (actual[2] - plain[2]).abs().max() > 1e-2


def test_bf16_close_to_official(tmp_path):
    cfg, ref, ours = _official_pair(tmp_path, "w64")
    ref, ours = ref.to(torch.bfloat16), ours.to(torch.bfloat16)
    x, ctx, mask, pos = dit_inputs(cfg, batch=2, grid=(3, 4, 5), dtype=torch.bfloat16)
    sigma = torch.tensor([[0.9], [0.3]])
    with torch.no_grad():
        expected = _official_forward(ref, x, sigma, ctx, mask, pos)
        actual = ours(x, sigma, ctx, mask, pos)
    assert actual.dtype == torch.bfloat16
    torch.testing.assert_close(actual.float(), expected.float(), atol=BF16_ATOL, rtol=0)


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("per_token", [False, True], ids=["global_t", "per_token_t"])
def test_matches_diffusers_fp32(tmp_path, name, per_token):
    from diffusers import LTXVideoTransformer3DModel

    from ltx.ltxv.keys_diffusers import dit_config_to_diffusers

    cfg = TINY[name]
    c = {k: v for k, v in dit_config_to_diffusers(cfg).items() if not k.startswith("_")}
    ref = randomize_(LTXVideoTransformer3DModel(**c), seed=3).eval()
    ref.save_pretrained(tmp_path / "transformer")
    ours = load_dit(tmp_path / "transformer", )
    x, ctx, mask, pos = dit_inputs(cfg, batch=2, grid=(3, 3, 5))
    T = x.shape[1]
    sigma = torch.tensor([0.6, 0.2])[:, None].expand(2, T).clone() if per_token else torch.tensor([0.6, 0.2])
    if per_token:
        sigma[:, :15] = 0.0
    with torch.no_grad():
        expected = ref(hidden_states=x, encoder_hidden_states=ctx, timestep=1000 * sigma,
                       encoder_attention_mask=mask, video_coords=pos, return_dict=False)[0]
        actual = ours(x, sigma, ctx, mask, pos)
    torch.testing.assert_close(actual, expected, atol=FP32_ATOL, rtol=0)


# ------------------------------------------------------------------------ every released config, full size, meta


def _presets():
    from omegaconf import OmegaConf

    from ltx.presets import ModelPreset

    for path in sorted(glob.glob(str(REPO / "configs/model/*.yaml"))):
        yield OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelPreset), OmegaConf.load(path)))


PRESETS = {p.name: p for p in _presets() if p.name != "ltx-demo" and not p.is_ltx2}  # released 0.9.x models
PARAMS = {"2b": 1_923_000_000, "13b": 13_043_000_000}  # reference notes: 1,923 M and 13,043 M


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_released_config_keys_and_shapes(name):
    """Our module on meta has exactly the official and the diffusers key sets and shapes (through our tables)."""
    from diffusers import LTXVideoTransformer3DModel
    from ltx_video.models.transformers.transformer3d import Transformer3DModel

    from ltx.core.keymap import rename, rules_used
    from ltx.ltxv.keys_diffusers import DIT_FROM_DIFFUSERS, dit_config_to_diffusers
    from ltx.ltxv.keys_official import DIT_FROM_OFFICIAL, DIT_PREFIX, dit_config_from_official

    cfg = PRESETS[name].dit
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in DiT(cfg).state_dict().items()}
        official_cfg = dit_config_to_official(cfg)
        official_sd = Transformer3DModel.from_config(official_cfg).state_dict()
        official = {DIT_PREFIX + k: tuple(v.shape) for k, v in official_sd.items()}
        c = {k: v for k, v in dit_config_to_diffusers(cfg).items() if not k.startswith("_")}
        diffusers = {k: tuple(v.shape) for k, v in LTXVideoTransformer3DModel(**c).state_dict().items()}
    assert dit_config_from_official(json.loads(json.dumps(official_cfg))) == cfg
    for theirs, rules in ((official, DIT_FROM_OFFICIAL), (diffusers, DIT_FROM_DIFFUSERS)):
        mapping = rename(theirs, rules)
        assert set(mapping) == set(ours)
        assert {k: theirs[mapping[k]] for k in ours} == ours
        assert rules_used(theirs, rules) == set(range(len(rules)))  # no dead rule
    n = sum(torch.Size(s).numel() for s in ours.values())
    size = "13b" if "13b" in name else "2b"
    assert abs(n - PARAMS[size]) < 1e6, n
