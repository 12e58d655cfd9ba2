"""LTX-Video 0.9.x (2B / 13B, dev and distilled): the DiT (`transformer`), the causal video VAE (`vae`,
`vae_tiling`), latent upsamplers, the T5 text path, checkpoints in the official / diffusers / ltx layouts
(`checkpoint` with the key tables `keys_*`), patchify and conditioning, guidance, the pipelines, chaining, the
Python API and distillation objectives. Mirrors `ltx.ltx2` file for file where the roles are the same; built on
`ltx.core` (and the release table `ltx.presets`), never on `ltx.ltx2`.
"""
