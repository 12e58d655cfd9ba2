"""LTX-2.5's packed text-encoder file (ltx.ltx2.gemma_pack): Gemma 4, its tokenizer files and the text projection in
one .safetensors, as `gemma4-12b-with-proj-ltx-2.5-bf16.safetensors` ships.

Independent checks: a file packed by the official ltx-core packer (`build_text_encoder_tensors_from_gemma_root`, run
from a Lightricks/LTX-2 checkout) encodes prompts exactly as the Hugging Face folder it was packed from (hidden states
bitwise, through transformers' own model); our packer's file reads back through the official reader
(`GemmaAssets.from_single_file`: config, tokenizer and sidecars as the folder's); and a pipeline on split files whose
transformer file lacks the projection, given the packed file, generates what the folder + full files generate."""

from __future__ import annotations

import json
import shutil
import types

import pytest
import torch
from official_mirror import load_official
from safetensors.torch import save_file
from test_ltx2_25 import files  # noqa: F401  (the module fixture)

import ltx
from ltx.core.checkpoint import CheckpointError, SafetensorsReader
from ltx.ltx2 import gemma_pack
from ltx.ltx2.text import GemmaFolderMissing, GemmaTextEncoder, read_gemma_info
from ltx.presets import load_preset

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = ["a dog barks at the waves", "red ball"]


def _projection(split_folder) -> dict[str, torch.Tensor]:
    r = SafetensorsReader(split_folder / "ltx-2.5-tiny-transformer.safetensors")
    return {k: r.get(k) for k in r.keys() if k.startswith(gemma_pack.PROJECTION_PREFIX)}


@pytest.fixture(scope="module")
def official_assets():
    names = {"ltx_core.utils": "packages/ltx-core/src/ltx_core/utils.py",
             "ltx_core.text_encoders.gemma.gemma_assets":
                 "packages/ltx-core/src/ltx_core/text_encoders/gemma/gemma_assets.py"}
    stubs = {n: types.ModuleType(n) for n in ("ltx_core", "ltx_core.text_encoders", "ltx_core.text_encoders.gemma")}
    return load_official(names, stubs)["ltx_core.text_encoders.gemma.gemma_assets"]


def _encode(path):
    enc = GemmaTextEncoder.from_folder(path, dtype=torch.float32)
    return enc.tokenize(PROMPTS)[0], enc.encode(PROMPTS)


def test_official_packed_file_encodes_as_its_folder(files, official_assets, tmp_path):  # noqa: F811
    """The official packer (ComfyUI-flat names, tokenizer and sidecars as uint8 tensors, gemma_config metadata) ->
    our reader: the same token ids, hidden states bitwise, the same GemmaInfo; the projection tensors bitwise."""
    folder = tmp_path / "gemma4"
    shutil.copytree(files["gemma4"], folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma4UnifiedProcessor"}))
    projection = _projection(files["folder"])
    tensors, metadata = official_assets.build_text_encoder_tensors_from_gemma_root(str(folder), projection)
    assert "model.layers.0.input_layernorm.weight" in tensors  # the flat layout the official packer writes
    packed = tmp_path / "gemma4-with-proj.safetensors"
    official_assets.save_text_encoder_safetensors(packed, tensors, metadata)
    assert gemma_pack.is_packed(packed)
    assert not gemma_pack.is_packed(files["folder"] / "ltx-2.5-tiny-video_vae.safetensors")
    ids_f, (hidden_f, mask_f) = _encode(folder)
    ids_p, (hidden_p, mask_p) = _encode(packed)
    assert torch.equal(ids_f, ids_p) and torch.equal(mask_f, mask_p) and len(hidden_f) == len(hidden_p) == 49
    assert all(torch.equal(a, b) for a, b in zip(hidden_f, hidden_p, strict=True))
    assert hidden_p[-1].abs().max() > 0.1
    info_f, info_p = read_gemma_info(folder), read_gemma_info(packed)
    assert (info_f.model_type, info_f.gemma_version, info_f.hidden_size, info_f.num_hidden_states) == \
        (info_p.model_type, info_p.gemma_version, info_p.hidden_size, info_p.num_hidden_states)
    reader = gemma_pack.ProjectionReader(packed)
    assert reader.keys() == sorted(projection) and all(torch.equal(reader.get(k), v) for k, v in projection.items())


def test_our_packed_file_reads_with_the_official_reader(files, official_assets, tmp_path):  # noqa: F811
    folder = tmp_path / "gemma4"
    shutil.copytree(files["gemma4"], folder)
    (folder / "processor_config.json").write_text(json.dumps({"processor_class": "Gemma4UnifiedProcessor"}))
    packed = gemma_pack.write_packed(folder, _projection(files["folder"]), tmp_path / "ours.safetensors")
    assets = official_assets.GemmaAssets.from_single_file(packed)
    assert dict(assets.config_dict) == json.loads((folder / "config.json").read_text())
    assert assets.tokenizer_json == (folder / "tokenizer.json").read_bytes()
    for name in ("tokenizer_config.json", "processor_config.json", "generation_config.json"):
        assert assets.sidecars[name] == (folder / name).read_bytes()
    keys = SafetensorsReader(packed).keys()
    assert "lm_head.weight" not in keys and not any(k.startswith("model.language_model.") for k in keys)
    ids_f, (hidden_f, _) = _encode(folder)
    ids_p, (hidden_p, _) = _encode(packed)
    assert torch.equal(ids_f, ids_p) and all(torch.equal(a, b) for a, b in zip(hidden_f, hidden_p, strict=True))


def test_split_files_with_the_packed_text_encoder_generate_as_the_folder(files, tmp_path):  # noqa: F811
    """The released layout: the transformer file without `text_embedding_projection.*`, the projection in the packed
    text encoder. The pipeline takes the projection from it and generates what the full files + Gemma folder do."""
    split = tmp_path / "split"
    shutil.copytree(files["folder"], split)
    src = split / "ltx-2.5-tiny-transformer.safetensors"
    r = SafetensorsReader(src)
    save_file({k: r.get(k) for k in r.keys() if not k.startswith(gemma_pack.PROJECTION_PREFIX)}, str(src),
              metadata=r.metadata)
    packed = gemma_pack.write_packed(files["gemma4"], _projection(files["folder"]), tmp_path / "te.safetensors")
    request = dict(seed=3, height=128, width=128, num_frames=9, frame_rate=24.0)
    common = dict(model=load_preset("ltx-2.5-22b-distilled"), upsampler=files["up"], device="cpu", dtype="float32")
    with pytest.raises(CheckpointError, match="no text projection \\(text_embedding_projection.\\*\\): LTX-2.5's split "
                                              "files keep it in the packed text encoder; pass text_encoder="):
        ltx.open_pipeline(split, text_encoder=files["gemma4"], **common)
    want = ltx.open_pipeline(files["folder"], text_encoder=files["gemma4"], **common).load()("red ball", **request)
    got = ltx.open_pipeline(split, text_encoder=packed, **common).load()("red ball", **request)
    assert torch.equal(want.frames, got.frames) and torch.equal(want.waveform, got.waveform)
    # the same with the packed file inside the checkpoint folder
    shutil.copy(packed, split / "te.safetensors")
    again = ltx.open_pipeline(split, text_encoder=packed, **common).load()("red ball", **request)
    assert torch.equal(want.frames, again.frames)


def test_bad_text_encoder_files_refused_in_one_line(files, tmp_path):  # noqa: F811
    with pytest.raises(GemmaFolderMissing, match="is a file but not a packed text encoder"):
        read_gemma_info(files["folder"] / "ltx-2.5-tiny-video_vae.safetensors")
    with pytest.raises(CheckpointError, match="no 'gemma_config' in the metadata: not a packed text-encoder file"):
        gemma_pack.read_packed(files["folder"] / "ltx-2.5-tiny-video_vae.safetensors")
    packed = gemma_pack.write_packed(files["gemma4"], _projection(files["folder"]), tmp_path / "te.safetensors")
    r = SafetensorsReader(packed)
    broken = tmp_path / "broken.safetensors"
    sd = {k: r.get(k) for k in r.keys() if k != "model.layers.0.input_layernorm.weight"}
    save_file(sd, str(broken), metadata=r.metadata)
    with pytest.raises(CheckpointError, match="the Gemma weights do not fit its gemma_config \\(missing: "
                                              "\\['model.language_model.layers.0.input_layernorm.weight'\\]\\)"):
        GemmaTextEncoder.from_folder(broken, dtype=torch.float32)
    save_file({k: v for k, v in sd.items() if k != "tokenizer_json"}, str(broken), metadata=r.metadata)
    with pytest.raises(CheckpointError, match="no 'tokenizer_json' tensor"):
        gemma_pack.read_packed(broken)
    wrong = json.loads(r.metadata["gemma_config"]) | {"gemma_version": "gemma4-12b-ltx-v0"}
    save_file({k: r.get(k) for k in r.keys()}, str(broken), metadata={**r.metadata, "gemma_config": json.dumps(wrong)})
    with pytest.raises(ValueError, match="text_encoder: text encoder mismatch: .*gemma4-12b-ltx-v0"):
        ltx.open_pipeline(files["folder"], model=load_preset("ltx-2.5-22b-distilled"), text_encoder=broken,
                          upsampler=files["up"], device="cpu", dtype="float32")
