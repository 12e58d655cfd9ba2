"""Per-step time of ltx.ltxv.pipelines.denoise_pass vs the official LTXVideoPipeline on the same tiny CPU model, and
transformer calls / batch rows per step for each guidance setting.

    python tools/bench_sampler.py [--steps 6] [--repeats 3]

Both sides: same official-format weights (ours loaded through ltx.convert), fp32, precomputed text embeddings,
latent output (no VAE), text-to-video. Time per step = (wall time of the whole pass) / steps, best of repeats.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=3, default=(128, 192, 25), help="height width frames")
    args = ap.parse_args()
    from conftest import official_dit, official_dit_file, randomize_
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
    from ltx_video.schedulers.rf import RectifiedFlowScheduler
    from ltx_video.utils.skip_layer_strategy import SkipLayerStrategy

    from ltx.ltxv.checkpoint import load_dit
    from ltx.ltxv.guidance import TextConditioning
    from ltx.ltxv.pipelines import PassOptions, SchedulerSpec, denoise_pass
    from ltx.ltxv.transformer import DiTConfig
    from ltx.presets import PassConfig

    torch.set_num_threads(2)
    cfg = DiTConfig(num_layers=4, num_heads=4, head_dim=16, in_channels=16, out_channels=16, caption_channels=32,
                    causal_temporal_positioning=True)
    ref = randomize_(official_dit(cfg), seed=0).eval()
    path = official_dit_file(Path(tempfile.mkdtemp()) / "bench.safetensors", ref)
    ours = load_dit(path)
    h, w, n = args.size
    g = torch.Generator().manual_seed(0)
    ctx, neg = torch.randn(1, 16, 32, generator=g), torch.randn(1, 16, 32, generator=g)
    mask = torch.ones(1, 16)
    text = TextConditioning(ctx, mask, neg, mask)

    from ltx_video.models.autoencoders.causal_video_autoencoder import (
        CausalVideoAutoencoder,
        create_video_autoencoder_demo_config,
    )
    c = create_video_autoencoder_demo_config(latent_channels=16)
    c.update(encoder_base_channels=8, decoder_base_channels=8)
    vae = CausalVideoAutoencoder.from_config(c)  # the reference reads its scale factors; nothing is decoded
    pipe = LTXVideoPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=ref,
                            scheduler=RectifiedFlowScheduler(sampler="LinearQuadratic"),
                            patchifier=SymmetricPatchifier(1), prompt_enhancer_image_caption_model=None,
                            prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
                            prompt_enhancer_llm_tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    calls: list[int] = []
    orig_forward = ref.forward

    def counting_forward(hidden_states, *a, **k):
        calls.append(hidden_states.shape[0])
        return orig_forward(hidden_states, *a, **k)

    ref.forward = counting_forward
    settings = {
        "none": dict(cfg=1.0, stg=0.0, rescale=1.0, blocks=[]),
        "cfg": dict(cfg=3.0, stg=0.0, rescale=1.0, blocks=[]),
        "stg": dict(cfg=1.0, stg=1.0, rescale=0.7, blocks=[2]),
        "cfg+stg+rescale+cfg*": dict(cfg=3.0, stg=1.0, rescale=0.7, blocks=[2]),
    }
    tokens = (n // 8 + 1) * (h // 32) * (w // 32)
    print(f"tiny DiT {cfg.num_layers} layers, width {cfg.dim}; {h}x{w}x{n} -> {tokens} tokens; {args.steps} steps; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| guidance | official ms/step | ours ms/step | ratio ours/official | official calls (rows) per step "
          "| ours calls (rows) per step |")
    print("|---|---|---|---|---|---|")
    for name, s in settings.items():
        p = PassConfig(num_inference_steps=args.steps, guidance_scale=[s["cfg"]], stg_scale=[s["stg"]],
                       rescaling_scale=[s["rescale"]], skip_block_list=[s["blocks"]], cfg_star_rescale=True)
        t_ref, t_ours = [], []
        for _ in range(args.repeats):
            calls.clear()
            t0 = time.perf_counter()
            with torch.no_grad():
                pipe(height=h, width=w, num_frames=n, frame_rate=25, generator=torch.Generator().manual_seed(1),
                     output_type="latent", prompt_embeds=ctx, prompt_attention_mask=mask, negative_prompt=None,
                     negative_prompt_embeds=neg, negative_prompt_attention_mask=mask, is_video=True,
                     vae_per_channel_normalize=True, num_inference_steps=args.steps, guidance_scale=s["cfg"],
                     stg_scale=s["stg"], rescaling_scale=s["rescale"], skip_block_list=s["blocks"],
                     cfg_star_rescale=True, skip_layer_strategy=SkipLayerStrategy.AttentionValues)
            t_ref.append(time.perf_counter() - t0)
            ref_calls = list(calls)
            opts = PassOptions()
            t0 = time.perf_counter()
            with torch.no_grad():
                denoise_pass(ours, None, text, p, SchedulerSpec(), height=h, width=w, num_frames=n, fps=25,
                             generator=torch.Generator().manual_seed(1), opts=opts)
            t_ours.append(time.perf_counter() - t0)
        r, o = min(t_ref) / args.steps * 1e3, min(t_ours) / args.steps * 1e3
        print(f"| {name} | {r:.1f} | {o:.1f} | {o / r:.2f} | {len(ref_calls) / args.steps:.0f} "
              f"({ref_calls[0]}) | {len(opts.forward_rows) / args.steps:.0f} ({opts.forward_rows[0]}) |")


if __name__ == "__main__":
    main()
