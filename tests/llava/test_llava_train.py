"""LLaVA's own pretraining script (stage 1, ``tune_mm_mlp_adapter``) through ``llava_patch.train``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llava.train.train", reason="llava-torch is not installed "
                    "(pip install '.[llava]', Python <= 3.11)")

import torch  # noqa: E402
import transformers  # noqa: E402
from llava.model.builder import load_pretrained_model  # noqa: E402
from llava.train import train as llava_train  # noqa: E402
from llava_helpers import WIDTH, build_llava, llava_config, save_tokenizer  # noqa: E402
from PIL import Image  # noqa: E402

import llava_patch  # noqa: E402
from llava_patch.train import main, pop_option  # noqa: E402
from toconv import TokenCompressor  # noqa: E402

pytestmark = pytest.mark.usefixtures("patched")


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random Llama with a tiny sentencepiece tokenizer (LLaVA's base LM)."""
    path = save_tokenizer(tmp_path_factory.mktemp("tiny-llama"))
    vocab = transformers.LlamaTokenizer.from_pretrained(path).vocab_size
    config = transformers.LlamaConfig(vocab_size=vocab, hidden_size=WIDTH,
                                      intermediate_size=2 * WIDTH, num_hidden_layers=2,
                                      num_attention_heads=4, max_position_embeddings=1024)
    torch.manual_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def captions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """LLaVA pretraining data: 2 images with one caption each (``plain`` template)."""
    root = tmp_path_factory.mktemp("captions")
    (root / "images").mkdir()
    rows = []
    for i, caption in enumerate(["a photo of a cat", "a red car near a tree"]):
        pixels = torch.randint(0, 255, (64, 80, 3), dtype=torch.uint8).numpy()
        Image.fromarray(pixels).save(root / "images" / f"{i}.png")
        rows.append({"id": str(i), "image": f"{i}.png", "conversations": [
            {"from": "human", "value": "<image>\n"}, {"from": "gpt", "value": caption}]})
    (root / "data.json").write_text(json.dumps(rows))
    return root


class Recorder:
    """Wraps the patched trainer class to snapshot the parameters around ``train()``."""

    def __init__(self, base: type) -> None:
        recorder = self

        class Recording(base):  # type: ignore[misc, valid-type]
            def train(self, *args: Any, **kwargs: Any) -> Any:
                recorder.model = self.model
                recorder.before = _snapshot(self.model)
                out = super().train(*args, **kwargs)
                recorder.after = _snapshot(self.model)
                return out

        self.cls = Recording


def _snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().float().clone() for n, p in model.named_parameters()}


def pretrain_args(llama: Path, captions: Path, clip: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--model_name_or_path", str(llama), "--version", "plain",
        "--data_path", str(captions / "data.json"), "--image_folder", str(captions / "images"),
        "--vision_tower", str(clip), "--mm_projector_type", "mlp2x_gelu",
        "--tune_mm_mlp_adapter", "True", "--mm_vision_select_layer", "-2",
        "--mm_use_im_start_end", "False", "--mm_use_im_patch_token", "False",
        "--use_token_compression", "True", "--compression_input_size", "24",
        "--compression_output_size", "12",
        "--bf16", "True", "--output_dir", str(out), "--max_steps", "1",
        "--per_device_train_batch_size", "2", "--learning_rate", "1e-2",
        "--save_strategy", "no", "--report_to", "none", "--model_max_length", "512",
        "--dataloader_num_workers", "0", "--lazy_preprocess", "True", *extra,
    ]


def test_pop_option() -> None:
    assert pop_option(["--a", "1", "--attn_implementation", "sdpa"], "attn_implementation") == (
        ["--a", "1"], "sdpa")
    assert pop_option(["--attn_implementation=eager"], "attn_implementation") == ([], "eager")
    assert pop_option(["--a", "1"], "attn_implementation") == (["--a", "1"], None)
    with pytest.raises(ValueError, match="expects a value"):
        pop_option(["--attn_implementation"], "attn_implementation")


def test_pretraining_step_saves_and_restores_compressor(
        llama: Path, captions: Path, tiny_clip_path: Path, ckpt_24to12: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(llava_train.LLaVATrainer)
    monkeypatch.setattr(llava_train, "LLaVATrainer", recorder.cls)
    out = tmp_path / "stage1"
    main(pretrain_args(llama, captions, tiny_clip_path, out,
                       "--compression_checkpoint", str(ckpt_24to12),
                       "--save_strategy", "steps", "--save_steps", "1"))

    changed = {n for n in recorder.after if not torch.equal(recorder.after[n], recorder.before[n])}
    trainable = {n for n, p in recorder.model.named_parameters() if p.requires_grad}
    assert changed == trainable
    assert {n.split(".")[-3] if "token_compressor" in n else n.split(".")[1] for n in changed} == {
        "mm_projector", "token_compressor"}
    assert any("token_compressor" in n for n in changed)

    companion = out / "mm_projector.token_compressor.safetensors"
    config = json.loads((out / "config.json").read_text())
    assert config["use_token_compression"] is True and config["compression_output_size"] == 12
    assert config["compression_checkpoint"] == str(companion.resolve())
    saved = TokenCompressor.from_pretrained(companion)
    step = out / "checkpoint-1"  # the trainer's periodic adapter checkpoint holds it too
    step_config = json.loads((step / "config.json").read_text())
    assert (step / "mm_projector.bin").is_file()
    assert step_config["compression_checkpoint"] == str(
        (step / "mm_projector.token_compressor.safetensors").resolve())
    torch.testing.assert_close(
        TokenCompressor.from_pretrained(step_config["compression_checkpoint"]).conv.weight,
        saved.conv.weight)
    trained = {n.split("token_compressor.")[1]: v for n, v in recorder.after.items()
               if "token_compressor" in n}
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(value, trained[name])

    # stage 2 style: pretrain_mm_mlp_adapter restores the projector and the compressor
    args = llava_train.ModelArguments(
        vision_tower=str(tiny_clip_path), mm_vision_select_layer=-2,
        mm_projector_type="mlp2x_gelu", pretrain_mm_mlp_adapter=str(out / "mm_projector.bin"),
        use_token_compression=True, compression_checkpoint=str(ckpt_24to12))
    model = build_llava(llava_config(tiny_clip_path, vocab_size=config["vocab_size"]))
    model.get_model().vision_tower = None
    model.get_model().mm_projector = None
    model.get_model().initialize_vision_modules(args)
    restored = model.get_vision_tower().token_compressor.state_dict()
    for name, value in saved.state_dict().items():
        torch.testing.assert_close(restored[name], value)
    assert model.config.compression_checkpoint == str(companion.resolve())

    # the stage-1 folder also loads for inference on top of its base LM
    _, loaded, _, _ = load_pretrained_model(str(out), str(llama), "llava-stage1", device="cpu")
    tower = loaded.get_vision_tower()
    assert llava_patch.compressed_tower(loaded) is tower and tower.num_patches == 144
    torch.testing.assert_close(tower.token_compressor.conv.weight,
                               saved.conv.weight.to(tower.dtype))


def test_frozen_compressor_is_not_trained(llama: Path, captions: Path, tiny_clip_path: Path,
                                          ckpt_24to12: Path, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder(llava_train.LLaVATrainer)
    monkeypatch.setattr(llava_train, "LLaVATrainer", recorder.cls)
    main(pretrain_args(llama, captions, tiny_clip_path, tmp_path / "frozen",
                       "--compression_checkpoint", str(ckpt_24to12),
                       "--freeze_token_compressor", "True"))
    changed = {n for n in recorder.after if not torch.equal(recorder.after[n], recorder.before[n])}
    assert changed and all("mm_projector" in n for n in changed)
    tower = llava_patch.compressed_tower(recorder.model)
    assert tower.token_compressor.conv.weight.dtype == torch.bfloat16  # follows the tower


def test_full_finetune_saves_compressor_in_model_weights(
        llama: Path, captions: Path, tiny_clip_path: Path, ckpt_24to12: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from llava.model import LlavaLlamaForCausalLM

    recorder = Recorder(llava_train.LLaVATrainer)
    monkeypatch.setattr(llava_train, "LLaVATrainer", recorder.cls)
    out = tmp_path / "full"
    main(pretrain_args(llama, captions, tiny_clip_path, out, "--compression_checkpoint",
                       str(ckpt_24to12), "--tune_mm_mlp_adapter", "False"))
    assert not (out / "mm_projector.bin").exists()

    reloaded = LlavaLlamaForCausalLM.from_pretrained(out, low_cpu_mem_usage=True)
    reloaded.get_vision_tower().load_model()
    weight = reloaded.get_vision_tower().token_compressor.conv.weight
    trained = next(v for n, v in recorder.after.items() if n.endswith("token_compressor.conv.weight"))
    torch.testing.assert_close(weight, trained)
    assert not torch.equal(weight, TokenCompressor.from_pretrained(ckpt_24to12).conv.weight)
