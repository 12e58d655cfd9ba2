"""Per-step time of ltx.ltxv.pipelines.denoise_pass vs the official LTXVideoPipeline on the same tiny CPU model, and
transformer calls / batch rows per step for each guidance setting.

    python tools/bench_sampler.py [--steps 6] [--repeats 3]

Both sides: same official-format weights (ours loaded through ltx.ltxv.checkpoint), fp32, precomputed text embeddings,
latent output (no VAE), text-to-video. Time per step = (wall time of the whole pass) / steps, best of repeats.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


SETTINGS = {  # guidance name -> (cfg, stg, rescale, STG blocks)
    "none": (1.0, 0.0, 1.0, []),
    "cfg": (3.0, 0.0, 1.0, []),
    "stg": (1.0, 1.0, 0.7, [2]),
    "cfg+stg+rescale+cfg*": (3.0, 1.0, 0.7, [2]),
}


def best_time(run, repeats: int) -> float:
    """The fastest of `repeats` wall times of run() (seconds), without autograd."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        with torch.no_grad():
            run()
        times.append(time.perf_counter() - t0)
    return min(times)


def official_pipeline(transformer):
    """The reference LTXVideoPipeline around `transformer`, text-free (prompt embeddings are passed in), with a
    tiny VAE it only reads its scale factors from; and the list each transformer call appends its rows to."""
    from ltx_video.models.autoencoders.causal_video_autoencoder import (
        CausalVideoAutoencoder,
        create_video_autoencoder_demo_config,
    )
    from ltx_video.models.transformers.symmetric_patchifier import SymmetricPatchifier
    from ltx_video.pipelines.pipeline_ltx_video import LTXVideoPipeline
    from ltx_video.schedulers.rf import RectifiedFlowScheduler

    c = create_video_autoencoder_demo_config(latent_channels=16)
    c.update(encoder_base_channels=8, decoder_base_channels=8)
    pipe = LTXVideoPipeline(tokenizer=None, text_encoder=None, vae=CausalVideoAutoencoder.from_config(c),
                            transformer=transformer, scheduler=RectifiedFlowScheduler(sampler="LinearQuadratic"),
                            patchifier=SymmetricPatchifier(1), prompt_enhancer_image_caption_model=None,
                            prompt_enhancer_image_caption_processor=None, prompt_enhancer_llm_model=None,
                            prompt_enhancer_llm_tokenizer=None)
    pipe.set_progress_bar_config(disable=True)
    calls: list[int] = []
    forward = transformer.forward

    def counting_forward(hidden_states, *args, **kwargs):
        calls.append(hidden_states.shape[0])
        return forward(hidden_states, *args, **kwargs)

    transformer.forward = counting_forward
    return pipe, calls


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, nargs=3, default=(128, 192, 25), help="height width frames")
    args = ap.parse_args()
    # the reference package and the test helpers are optional: imported only when the benchmark runs
    from conftest import official_dit, official_dit_file, randomize_
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
    ours = load_dit(official_dit_file(Path(tempfile.mkdtemp()) / "bench.safetensors", ref))
    pipe, ref_calls = official_pipeline(ref)
    h, w, n = args.size
    g = torch.Generator().manual_seed(0)
    ctx, neg = torch.randn(1, 16, 32, generator=g), torch.randn(1, 16, 32, generator=g)
    mask = torch.ones(1, 16)
    text = TextConditioning(ctx, mask, neg, mask)

    tokens = (n // 8 + 1) * (h // 32) * (w // 32)
    print(f"tiny DiT {cfg.num_layers} layers, width {cfg.dim}; {h}x{w}x{n} -> {tokens} tokens; {args.steps} steps; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print("| guidance | official ms/step | ours ms/step | ratio ours/official | official calls (rows) per step "
          "| ours calls (rows) per step |")
    print("|---|---|---|---|---|---|")
    for name, (cfg_scale, stg, rescale, blocks) in SETTINGS.items():
        p = PassConfig(num_inference_steps=args.steps, guidance_scale=[cfg_scale], stg_scale=[stg],
                       rescaling_scale=[rescale], skip_block_list=[blocks], cfg_star_rescale=True)
        opts = PassOptions()  # collects our rows per transformer call, over all repeats
        official = partial(pipe, height=h, width=w, num_frames=n, frame_rate=25, output_type="latent",
                           generator=torch.Generator().manual_seed(1), prompt_embeds=ctx, prompt_attention_mask=mask,
                           negative_prompt=None, negative_prompt_embeds=neg, negative_prompt_attention_mask=mask,
                           is_video=True, vae_per_channel_normalize=True, num_inference_steps=args.steps,
                           guidance_scale=cfg_scale, stg_scale=stg, rescaling_scale=rescale, skip_block_list=blocks,
                           cfg_star_rescale=True, skip_layer_strategy=SkipLayerStrategy.AttentionValues)
        ours_pass = partial(denoise_pass, ours, None, text, p, SchedulerSpec(), height=h, width=w, num_frames=n,
                            fps=25, generator=torch.Generator().manual_seed(1), opts=opts)
        ref_calls.clear()
        r = best_time(official, args.repeats) / args.steps * 1e3
        o = best_time(ours_pass, args.repeats) / args.steps * 1e3
        per_step = args.steps * args.repeats
        print(f"| {name} | {r:.1f} | {o:.1f} | {o / r:.2f} | {len(ref_calls) / per_step:.0f} "
              f"({ref_calls[0]}) | {len(opts.forward_rows) / per_step:.0f} ({opts.forward_rows[0]}) |")


if __name__ == "__main__":
    main()
