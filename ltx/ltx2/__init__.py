"""LTX-2 (19B) and LTX-2.3 (22B): the joint audio + video model.

Native modules named after the official checkpoint keys, configs read from the checkpoint's metadata, and
parity-tested against `ltx-core` 1.0.0 (tests/ltx2). Mirrors `ltx.ltxv` file for file where the roles are the same
(transformer, vae, upsampler, text, checkpoint, patchify, pipelines, api); built on `ltx.core`, never on `ltx.ltxv`.
"""
