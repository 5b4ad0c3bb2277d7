"""The slots family: slot attention, semantic VQ, its design and its training."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toconv.models import (
    SemanticVQ,
    SlotCompressor,
    create_compressor,
    init_slots,
    list_families,
    load_compressor,
)
from toconv.models.kmeans import kmeans
from toconv.objective import CompressorObjective, build_design
from toconv.objective.designs.slots import SlotBroadcastDecoder
from toconv.recipes import get_recipe


def _clustered(batch: int = 6, side: int = 6, dim: int = 16, groups: int = 4,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, side², dim) tokens from ``groups`` well-separated clusters, and their labels."""
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(groups, dim, generator=g)
    labels = torch.randint(groups, (batch, side * side), generator=g)
    return centres[labels] + 0.1 * torch.randn(batch, side * side, dim, generator=g), labels


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return _clustered()[0]


def test_registered_with_presets_and_deterministic_in_eval(tokens, device):
    assert "slots" in list_families()
    assert create_compressor("dinov2-s336-slots64").num_slots == 64
    assert create_compressor("siglip-384-slots81").config.input_grid_size == 27
    model = init_slots(tokens, 2, seed=3).to(device)
    torch.manual_seed(123)  # the global random state does not matter
    again = init_slots(tokens, 2, seed=3).to(device)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values(), strict=True))
    x = tokens.to(device)
    with torch.no_grad():
        z = model(x)
        assert z.shape == (6, 4, 16) and z.device.type == device.type
        assert torch.equal(z, model(x)) and torch.equal(z, again(x))


def test_masks_sum_to_one_and_assignments_follow_them(tokens):
    model = init_slots(tokens, 2)
    with torch.no_grad():
        masks, owner = model.masks(tokens), model.assignments(tokens)
    assert masks.shape == (6, 4, 36)
    assert torch.allclose(masks.sum(dim=1), torch.ones(6, 36), atol=1e-5)
    assert owner.dtype == torch.long and torch.equal(owner, masks.argmax(dim=1))


def test_kmeans_start_keeps_each_cluster_in_one_slot(tokens):
    """The untrained start is soft k-means: the tokens of one cluster share a slot."""
    model = init_slots(tokens, 2)
    with torch.no_grad():
        owner = model.assignments(tokens)
    labels = _clustered()[1]
    for b in range(6):
        pairs = set(zip(labels[b].tolist(), owner[b].tolist(), strict=True))
        assert len(pairs) == len(set(labels[b].tolist()))  # one slot per cluster


@pytest.mark.parametrize("plus_plus", [False, True])
def test_kmeans_recovers_separated_clusters(plus_plus):
    points, labels = _clustered(batch=3, groups=3, seed=2)
    _, found = kmeans(points, 3, generator=torch.Generator().manual_seed(0), plus_plus=plus_plus)
    for b in range(3):
        assert len(set(zip(labels[b].tolist(), found[b].tolist(), strict=True))) == len(set(labels[b].tolist()))


def test_pooled_start_is_in_the_tokens_space(tokens):
    """Before training each output token is its slot's weighted mean of input tokens."""
    model = init_slots(tokens, 2)
    with torch.no_grad():
        masks, z = model.masks(tokens), model(tokens)
    weights = masks / masks.sum(dim=-1, keepdim=True)
    assert torch.allclose(z, weights @ tokens, atol=1e-4)


@pytest.mark.parametrize("vq_blocks", [0, 4])
def test_save_load_round_trip_through_load_compressor(tmp_path: Path, tokens, vq_blocks):
    model = init_slots(tokens, 2, vq_blocks=vq_blocks, codebook_size=8)
    for path in (tmp_path / "folder", tmp_path / "slots.safetensors"):
        model.save_pretrained(path)
        loaded = load_compressor(path, input_grid_size=6, hidden_dim=16)
        assert isinstance(loaded, SlotCompressor) and loaded.config == model.config
        with torch.no_grad():
            assert torch.equal(loaded(tokens), model(tokens))
    with pytest.raises(ValueError, match="output_grid_size.: 3"):
        load_compressor(tmp_path / "folder", output_grid_size=3)


def test_cls_token_passes_through(tokens):
    model = SlotCompressor(6, 2, hidden_dim=16, cls_token=True).eval()
    x = torch.cat([torch.randn(6, 1, 16), tokens], dim=1)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (6, 5, 16) and torch.equal(out[:, 0], x[:, 0])
    with pytest.raises(ValueError, match=r"expects tokens of shape \(batch, 37, 16\).*got \(6, 36, 16\)"):
        model(tokens)


def test_vq_straight_through_gradient_has_the_commitment_term():
    vq = SemanticVQ(8, blocks=2, codebook_size=4, commitment=0.5).eval()
    z = torch.randn(3, 5, 8, requires_grad=True)
    q = vq(z)
    upstream = torch.randn_like(q)
    q.backward(upstream)
    commitment = 2 * 0.5 * (z.detach() - q.detach()) / z.numel()
    assert torch.allclose(z.grad, upstream + commitment, atol=1e-6)
    codes = vq.codes(z.detach())
    assert codes.shape == (3, 5, 2)
    expected = vq.codebooks[0][codes[..., 0]]  # block 0 holds the first 4 channels
    assert torch.equal(q[..., :4].detach(), expected)


def test_vq_restarts_dead_codes_and_reports_usage():
    torch.manual_seed(0)
    vq = SemanticVQ(4, blocks=1, codebook_size=4)
    z = torch.randn(2, 16, 4)
    vq.fit_(z)
    assert vq.usage()["used"] == 1.0 and 1.0 < vq.usage()["perplexity"] <= 4.0
    vq.share[0, 2] = 0.0  # code 2 is dead
    vq.codebooks[0, 2] = 100.0
    vq.train()(z.clone().requires_grad_())
    blocks = z.reshape(-1, 4)
    assert ((blocks - vq.codebooks[0, 2]).abs().sum(-1) < 1e-5).any()  # restarted at a real block
    assert vq.share[0, 2] > 0.1 / 4
    frozen = vq.codebooks.clone()
    vq(z)  # no gradients: no update
    assert torch.equal(vq.codebooks, frozen)


def test_broadcast_decoder_shapes_and_mixture():
    decoder = SlotBroadcastDecoder(16, num_positions=36, width=8, num_layers=2)
    z = torch.randn(2, 4, 16)
    out = decoder(z)
    per_slot, masks = decoder.per_slot(z)
    assert out.shape == (2, 36, 16) and per_slot.shape == (2, 4, 36, 16) and masks.shape == (2, 4, 36)
    assert torch.allclose(out, (masks.unsqueeze(-1) * per_slot).sum(1), atol=1e-5)


def test_design_draws_reals_from_each_slots_mask(tokens):
    model = init_slots(tokens, 2)
    owner = torch.arange(36).repeat(6, 1) % 4  # token n belongs to slot n mod 4
    fields = dataclasses.replace(model.rf, masks=lambda x: F.one_hot(owner, 4).transpose(1, 2).float())
    real = build_design("slots", fields).real_samples(tokens, torch.Generator().manual_seed(0))
    assert real.shape == (6, 4, 16)
    drawn = (real.unsqueeze(2) == tokens.unsqueeze(1)).all(-1).float().argmax(-1)  # (B, K) index
    assert torch.equal(drawn % 4, torch.arange(4).repeat(6, 1))
    objective = CompressorObjective.from_recipe(model, get_recipe("slots"))
    pred, target = objective.reconstruct(tokens)
    assert pred.shape == target.shape == (6, 4, 9, 16)  # the 6to2 grid's RF layout
    with pytest.raises(ValueError, match="family=slots"):
        build_design("slots", create_compressor("24to12").rf)


def test_trainer_trains_the_slots_family(tmp_path: Path, tiny_clip_path: Path, fresh_accelerate_state: None):
    pytest.importorskip("omegaconf", reason="the trainer needs the train extra")
    pytest.importorskip("tensorboard", reason="the trainer needs the train extra")
    from PIL import Image

    from toconv.config import ConfigError, load_config
    from toconv.train import main

    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    args = [f"encoder.name={tiny_clip_path}", f"data.imagenet_root={tmp_path}",
            f"data.cache_root={tmp_path / 'cache'}", f"experiment.output_dir={tmp_path / 'runs'}",
            "experiment.name=slots", "hardware.device=cpu", "recipe=slots",
            "model.compressor.output_grid_size=4", "training.max_steps=2", "training.batch_size=2",
            "model.critic.width=16"]
    with pytest.raises(ConfigError, match="recipe=slots"):
        load_config([*args[:6], "model.compressor.family=slots"])
    assert load_config(args).model.compressor.family == "slots"
    summary = main([*args, "model.compressor.family=slots"], progress=False)
    assert "16 slots" in summary["run"]["geometry"]
    model = load_compressor(tmp_path / "runs" / "slots" / "latest.safetensors")
    assert isinstance(model, SlotCompressor) and model.num_slots == 16


@pytest.mark.parametrize("name", ["slots", "slots-vq"])
def test_bench_rows_give_k_tokens_and_every_tokens_slot(name):
    import toconv.bench.slot_methods  # noqa: F401  (registers the rows)
    from toconv.bench.config import BenchConfig
    from toconv.bench.methods import MethodContext, build_method, is_seeded
    from toconv.geometry import resolve_geometry

    train = _clustered(batch=20, side=6, dim=32)[0]  # 80 slot tokens fit 64 codes
    config = BenchConfig(recipe_changes={"steps": 2, "batch_size": 4, "warmup_steps": 1})
    method = build_method(name, MethodContext(train, resolve_geometry(6, 2), config, log=lambda _: None))
    assert is_seeded(name) and method.learned and method.params > 0 and method.flops > 0
    assert {"loss", "reconstruction", "wasserstein"} <= set(method.history)
    assert ("vq_used" in method.history) == (name == "slots-vq")  # train_slots reports usage
    assert method.compress(train).shape == (20, 4, 32)
    owner = method.assignments(train)
    assert owner.shape == (20, 36) and owner.dtype == torch.long and 0 <= owner.min() <= owner.max() < 4


def test_fg_ari_matches_hand_computed_cases():
    from toconv.bench.shapes import fg_ari, token_labels

    truth = torch.tensor([[1, 1, 2, 2, 0, 0], [1, 1, 2, 2, 0, 0], [1, 1, 1, 2, 2, 0]])
    pred = torch.tensor([[5, 5, 3, 3, 5, 3], [0, 1, 0, 1, 0, 0], [0, 0, 1, 1, 1, 1]])
    # 1: a relabelling, the background ignored; 2: ARI([0,0,1,1], [0,1,0,1]) = -1/2;
    # 3: same-pair counts: both 2, truth 4, pred 4 of C(5,2) = 10 pairs, so expected 4·4/10 = 1.6
    #    and ARI = (2 − 1.6) / ((4 + 4)/2 − 1.6) = 1/6
    assert torch.allclose(fg_ari(truth, pred), torch.tensor([1.0, -0.5, 1 / 6]))
    masks = np.zeros((1, 4, 4), dtype=np.int64)
    masks[0, :2, :2], masks[0, 2:, 2:] = 1, 2
    assert token_labels(masks, grid=2).tolist() == [[1, 0, 0, 2]]


def test_slot_plot_colours_every_token(tmp_path: Path):
    from PIL import Image

    from toconv.viz.slots import plot_slot_assignments

    photo = Image.new("RGB", (48, 48), "gray")
    owner = torch.arange(16) // 4  # four horizontal bands of a 4x4 grid
    out = plot_slot_assignments(photo, owner, tmp_path / "slots.png", title="bands")
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (48 + 24, 2 * 48 + 8, 3)
    right = pixels[24:, 56:]
    assert len({tuple(right[6 + 12 * i, 6]) for i in range(4)}) == 4  # one colour per band
