"""The worker processes of tests/test_sequence_parallel.py: one gloo process group, every case run in turn.

Each case builds a tiny model from a fixed seed (the same on every rank), computes the single-process output
with the plain model, applies the parallel wrappers, computes the distributed output, removes the wrappers and
checks the model is back to the plain one. Rank 0 writes, per case, the max abs difference to the single-process
output on each rank, whether it is bitwise equal, and whether all ranks returned the same tensor.

    python tests/sp_worker.py WORLD PORT OUT.json CASE [CASE ...]   (spawns WORLD processes itself)
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ltx.core.lora import LoRAConfig, inject_lora, merge_lora
from ltx.core.sequence_parallel import (
    apply_cfg_parallel,
    apply_sequence_parallel,
    apply_tile_parallel,
    parallel_groups,
    tile_parallel_decode,
)
from ltx.ltx2.transformer import AVTransformer, AVTransformerConfig, Perturbations, StreamInput
from ltx.ltx2.vae import VIDEO_VAE_PRESETS, DecodeTiling, VideoVAEConfig
from ltx.ltx2.vae import VideoVAE as AVVideoVAE
from ltx.ltxv.transformer import DiT, DiTConfig, STGMode
from ltx.ltxv.vae import VAE_PRESETS, VideoVAE, tiny
from ltx.ltxv.vae_tiling import Tiling, tiled_decode


@torch.no_grad()
def randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (zero gates would make the blocks identities and hide wiring bugs)."""
    g = torch.Generator().manual_seed(seed)
    for name, p in module.named_parameters():
        if "norm" in name:
            p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
        elif "scale_shift_table" in name:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / max(1, p.shape[-1] if p.ndim else 1) ** 0.5)
    for b in module.buffers():
        if b.is_floating_point():
            b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return module


@torch.no_grad()
def lora_merged(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """A rank-4 LoRA on q, k, v, out with random A and B, merged into the weights (what generate does)."""
    g = torch.Generator().manual_seed(seed)
    inject_lora(model, LoRAConfig(rank=4), generator=g)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    merge_lora(model)
    return model


# ------------------------------------------------------------------------------------------------ 0.9.x


def dit_model(heads: int = 8, lora: bool = False) -> DiT:
    cfg = DiTConfig(num_layers=2, num_heads=heads, head_dim=8, in_channels=16, out_channels=16, caption_channels=24)
    model = randomize(DiT(cfg), 1).eval()
    return lora_merged(model, 2) if lora else model


def dit_inputs(model: DiT, video_tokens: int = 27, guide_tokens: int = 6, rows: int = 3) -> dict:
    """CFG / STG rows (cond, uncond, perturbed), video tokens at sigma 0.7 and guide tokens (a keyframe /
    IC-LoRA guide: extra tokens, their own positions, sigma 0), padded text."""
    g = torch.Generator().manual_seed(3)
    cfg = model.cfg
    T = video_tokens + guide_tokens
    sigma = torch.full((rows, T), 0.7)
    sigma[:, video_tokens:] = 0.0
    mask = torch.ones(rows, 7)
    mask[1, 4:] = 0
    skip = torch.ones(cfg.num_layers, rows)
    skip[1, 2] = 0.0  # row 2 is the STG row: block 1 perturbed
    return dict(x=torch.randn(rows, T, cfg.in_channels, generator=g), sigma=sigma,
                context=torch.randn(rows, 7, cfg.caption_channels, generator=g), context_mask=mask,
                positions=torch.rand(rows, 3, T, generator=g) * torch.tensor([2.0, 256.0, 256.0])[:, None],
                skip_mask=skip, stg_mode=STGMode.attention_values)


# ------------------------------------------------------------------------------------------------ LTX-2


def av_model(v23: bool, lora: bool = False) -> AVTransformer:
    cfg = AVTransformerConfig(
        num_layers=2, num_attention_heads=4, attention_head_dim=8, audio_num_attention_heads=4,
        audio_attention_head_dim=4, in_channels=16, out_channels=12, audio_in_channels=10, audio_out_channels=6,
        cross_attention_dim=32, audio_cross_attention_dim=16, caption_channels=12,
        apply_gated_attention=v23, cross_attention_adaln=v23, caption_proj_before_connector=v23)
    model = randomize(AVTransformer(cfg), 4).eval()
    return lora_merged(model, 5) if lora else model


def av_inputs(model: AVTransformer, video_tokens: int = 13, audio_tokens: int = 3, rows: int = 4):
    """Guidance rows (cond, uncond, STG, modality-isolated), conditioning tokens (timestep 0), self-attention
    masks on both streams (weights in [0, 1], some 0), padded text; `audio_tokens` < the process count on 4."""
    g = torch.Generator().manual_seed(6)
    cfg = model.cfg
    ctx_v, ctx_a = (cfg.inner_dim, cfg.audio_inner_dim) if cfg.caption_proj_before_connector else (12, 12)

    def stream(T: int, channels: int, axes: int, ctx: int, sigma: float) -> StreamInput:
        timesteps = torch.full((rows, T), sigma)
        timesteps[:, :2] = 0.0  # conditioning tokens
        start = torch.rand(rows, axes, T, generator=g) * 4
        weights = torch.rand(rows, T, T, generator=g)
        weights = torch.maximum(torch.where(weights < 0.3, 0.0, weights), torch.eye(T))
        mask = torch.ones(rows, 6, dtype=torch.long)
        mask[1, 3:] = 0
        return StreamInput(x=torch.randn(rows, T, channels, generator=g), timesteps=timesteps,
                           sigma=torch.full((rows,), sigma), positions=torch.stack([start, start + 1], -1),
                           context=torch.randn(rows, 6, ctx, generator=g), context_mask=mask, attention_mask=weights)

    video = stream(video_tokens, cfg.in_channels, 3, ctx_v, 0.6)
    audio = stream(audio_tokens, cfg.audio_in_channels, 1, ctx_a, 0.8)
    L = cfg.num_layers
    perturb = Perturbations.cat([Perturbations.none(L, 2), Perturbations.stg(L, 1, [1]),
                                 Perturbations.isolate_modalities(L, 1)])
    return dict(video=video, audio=audio, perturb=perturb)


# ------------------------------------------------------------------------------------------------ cases


def _apply(model, mode: str | None, cfg_groups: int):
    """Handles for: sequence parallel over the sp group (mode None: none) and / or the rows over cfg groups."""
    groups = parallel_groups(cfg_groups)
    handles = []
    if mode is not None and groups.sp_size > 1:
        handles.append(apply_sequence_parallel(model, groups.sp, mode))
    if cfg_groups > 1:
        handles.append(apply_cfg_parallel(model, groups.cfg))
    return handles


def _compare(model, inputs: dict, mode: str | None, cfg_groups: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    with torch.no_grad():
        ref = model(**inputs)
        handles = _apply(model, mode, cfg_groups)
        out = model(**inputs)
        for h in handles:
            h.remove()
        again = model(**inputs)
    refs, outs, agains = ((r,) if isinstance(r, torch.Tensor) else r for r in (ref, out, again))
    for a, r in zip(agains, refs):  # .remove() restored the plain model
        assert torch.equal(a, r), "the model after .remove() differs from the plain model"
    return list(zip(outs, refs))


def case(family: str, mode: str | None, cfg_groups: int = 1, lora: bool = False, v23: bool = False, **kw):
    def run(world: int):
        if family == "dit":
            model = dit_model(lora=lora)
            return _compare(model, dit_inputs(model, **kw), mode, cfg_groups)
        model = av_model(v23, lora)
        return _compare(model, av_inputs(model, **kw), mode, cfg_groups)

    return run


def vae_ltxv(world: int):
    vae = randomize(VideoVAE(tiny(VAE_PRESETS["0.9.5"])), 7).eval()
    for name, p in vae.named_parameters():
        if name.endswith("timestep_scale_multiplier"):
            p.data.fill_(1000.0)
    z = torch.randn(1, vae.cfg.latent_channels, 4, 4, 5, generator=torch.Generator().manual_seed(8))
    t = 0.05 if vae.cfg.timestep_conditioning else None

    def decode():  # decode noise from the global RNG, as ltx.ltxv.pipelines.decode draws it
        noisy = z * 0.9 + torch.randn_like(z) * 0.1
        return tiled_decode(vae, noisy, t, tiling=Tiling((2, 2, 2), (1, 1, 1)))

    with torch.no_grad():
        torch.manual_seed(11)
        ref = decode()
        handle = apply_tile_parallel(vae)
        torch.manual_seed(11)
        out = tile_parallel_decode(vae, decode)
        handle.remove()
    return [(out, ref)]


def vae_ltx2(world: int):
    meta = VIDEO_VAE_PRESETS["ltx-2-19b"].to_metadata()
    for name, params in meta["decoder_blocks"] + meta["encoder_blocks"]:
        if name == "res_x":
            params["num_layers"] = 1
    meta.update(latent_channels=8, decoder_base_channels=4)
    vae = randomize(AVVideoVAE(VideoVAEConfig.from_metadata(meta)), 9).eval()
    z = torch.randn(1, 8, 4, 4, 5, generator=torch.Generator().manual_seed(10))
    tiling = DecodeTiling(spatial_tile_px=64, spatial_overlap_px=32, temporal_tile_frames=16,
                          temporal_overlap_frames=8)
    with torch.no_grad():
        ref = vae.tiled_decode(z, tiling)
        handle = apply_tile_parallel(vae)
        out = tile_parallel_decode(vae, lambda: vae.tiled_decode(z, tiling))
        handle.remove()
    return [(out, ref)]


def bad_heads(world: int):
    apply_sequence_parallel(randomize(DiT(DiTConfig(num_layers=1, num_heads=6, head_dim=8, in_channels=16,
                                                    out_channels=16, caption_channels=24)), 1))
    return []


def bad_vae(world: int):
    apply_tile_parallel(VideoVAE(tiny(VAE_PRESETS["0.9.1"])))
    return []


CASES = {
    "dit_ulysses": case("dit", "ulysses"),
    "dit_ring": case("dit", "ring"),
    "dit_ulysses_lora": case("dit", "ulysses", lora=True),
    "dit_ring_lora": case("dit", "ring", lora=True),
    "dit_cfg": case("dit", None, cfg_groups=2),
    "dit_cfg_ulysses": case("dit", "ulysses", cfg_groups=2),
    "dit_cfg_ring": case("dit", "ring", cfg_groups=2),
    "dit_even": case("dit", "ulysses", video_tokens=24, guide_tokens=0),
    "av_ulysses": case("av", "ulysses"),
    "av_ring": case("av", "ring"),
    "av23_ulysses": case("av", "ulysses", v23=True),
    "av23_ring": case("av", "ring", v23=True),
    "av_ulysses_lora": case("av", "ulysses", lora=True),
    "av_cfg": case("av", None, cfg_groups=2),
    "av_cfg_ulysses": case("av", "ulysses", cfg_groups=2),
    "av_cfg_ring": case("av", "ring", cfg_groups=2, v23=True),
    "av_one_audio_token": case("av", "ulysses", audio_tokens=1),
    "vae_ltxv": vae_ltxv,
    "vae_ltx2": vae_ltx2,
    "bad_heads": bad_heads,
    "bad_vae": bad_vae,
}


def run_cases(rank: int, world: int, port: int, out_path: str, names: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    results = {}
    for name in names:
        try:
            pairs = CASES[name](world)
            rows = []
            for out, ref in pairs:
                first = out.clone()
                dist.broadcast(first, src=0)
                rows.append({"max_abs_diff": (out.double() - ref.double()).abs().max().item(),
                             "ref_max": ref.abs().max().item(),
                             "bitwise": torch.equal(out, ref), "same_on_all_ranks": torch.equal(out, first),
                             "shape": list(out.shape)})
            results[name] = {"outputs": rows}
        except ValueError as e:  # the refusals the tests expect (raised on every rank alike)
            results[name] = {"error": str(e)}
        except Exception:  # anything else: say where and end this process, so the others fail instead of hanging
            with open(f"{out_path}.rank{rank}.crash", "w") as f:
                f.write(f"case {name}, rank {rank}:\n{traceback.format_exc()}")
            os._exit(1)
    gathered = [None] * world
    dist.all_gather_object(gathered, results)
    if rank == 0:
        with open(out_path + ".tmp", "w") as f:
            json.dump(gathered, f, indent=1)
        os.replace(out_path + ".tmp", out_path)
    dist.destroy_process_group()


if __name__ == "__main__":
    world, port, out_path, *names = sys.argv[1:]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        raise SystemExit(f"unknown case(s) {unknown}; valid: {sorted(CASES)}")
    mp.start_processes(run_cases, args=(int(world), int(port), out_path, names), nprocs=int(world),
                       start_method="spawn")
