"""The training loop: WGAN-GP critic steps, then a compressor+decoder step, on accelerate.

One code path serves CPU, one GPU and multi-GPU DDP (``accelerate launch -m toconv.train``).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn
from tqdm.auto import tqdm

from toconv.config import recipe_from_config
from toconv.data import EpochBatches, ImageFolderDataset
from toconv.data.images import num_val_images
from toconv.encoders import FrozenEncoder, build_encoder, preset_token_shape
from toconv.geometry import RFGeometry, resolve_geometry
from toconv.models import SlotCompressor, TokenCompressor, init_compressor, init_slots
from toconv.objective import CompressorObjective, make_optimizers, train_step
from toconv.training import checkpoint
from toconv.training.data import (
    CachedTokens,
    EncodedImages,
    TokenSource,
    default_cache_dir,
    open_or_build_caches,
)
from toconv.training.evaluation import Evaluation, evaluate, plot_evaluation
from toconv.training.summary import format_table, summary_rows, write_summary
from toconv.training.tracking import Tracker, require_tensorboard, require_wandb

logger = logging.getLogger(__name__)
_MIXED_PRECISION = {"fp32": "no", "fp16": "fp16", "bf16": "bf16"}


def make_accelerator(hardware: DictConfig) -> Accelerator:
    """Accelerator for ``hardware`` (device, GPU index of single-process runs, mixed precision)."""
    if hardware.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("hardware.device=cuda: expected a CUDA GPU, found none (use auto or cpu)")
    cpu = hardware.device == "cpu" or not torch.cuda.is_available()
    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if not cpu and single_process and hardware.cuda_device is not None:
        if not 0 <= hardware.cuda_device < torch.cuda.device_count():
            raise ValueError(f"hardware.cuda_device: expected an index below "
                             f"{torch.cuda.device_count()} (visible GPUs), got {hardware.cuda_device}")
        torch.cuda.set_device(hardware.cuda_device)
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=cpu, mixed_precision=_MIXED_PRECISION[hardware.mixed_precision],
                       kwargs_handlers=[ddp])


class Trainer:
    """Sets up a run from a validated config (run folder, data, models, optimizers, resume);
    :meth:`fit` trains, evaluates, checkpoints and writes the summary.

    With ``training.resume=auto`` on a run that already finished (its summary is written and its
    state reached ``training.epochs`` or ``training.max_steps``), nothing is set up or touched:
    :meth:`fit` reports it and returns its summary. A setup that fails removes the run folder it
    created, unless a training state was saved there.
    """

    def __init__(self, cfg: DictConfig, progress: bool = True) -> None:
        self.cfg, self.started = cfg, time.perf_counter()
        t = cfg.training
        self.tracker: Tracker | None = None
        if cfg.experiment.use_wandb:
            require_wandb()
        require_tensorboard()
        self.accelerator = make_accelerator(cfg.hardware)
        self.device = self.accelerator.device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.is_main = self.accelerator.is_main_process
        self.progress = progress and self.is_main
        self.run_dir = self._run_dir()
        resuming = t.resume == "auto" and checkpoint.has_training_state(self.run_dir)
        if checkpoint.has_training_state(self.run_dir) and not resuming:
            raise ValueError(f"run folder {self.run_dir} already holds a training state: continue it "
                             f"with training.resume=auto or choose another experiment.name")
        self.finished = (checkpoint.finished_summary(self.run_dir, t.epochs, t.max_steps)
                         if resuming else None)
        if self.finished is not None:
            return
        created = not self.run_dir.exists()
        self.log_file = self._start_log()
        try:
            self._setup(resuming)
        except BaseException:
            self.close()
            if self.is_main and created and not checkpoint.has_training_state(self.run_dir):
                shutil.rmtree(self.run_dir, ignore_errors=True)
            raise

    def _setup(self, resuming: bool) -> None:
        """Data, models, optimizers, resumed state and trackers (the log is already open)."""
        cfg, t = self.cfg, self.cfg.training
        logger.info("run folder %s (%s)", self.run_dir, "resuming" if resuming else "new run")
        self._encoder: FrozenEncoder | None = None
        c = cfg.model.compressor
        # a frozen pinned start is refitted on resume: training holds its pinned directions and part
        self.fit_pca = c.init == "pca" and (not resuming or (c.pin_pooling > 0 and c.freeze_pinned))
        self.fit_kmeans = cfg.model.compressor.init == "kmeans" and not resuming
        self.train_source, self.val_source = self._sources()
        grid, hidden_dim = self._token_geometry()
        if cfg.model.compressor.input_grid_size != grid:
            raise ValueError(f"model.compressor.input_grid_size: the encoder {cfg.encoder.name!r} gives "
                             f"a {grid}x{grid} token grid, got input_grid_size="
                             f"{cfg.model.compressor.input_grid_size}")
        self.grid, self.hidden_dim = grid, hidden_dim

        self.recipe = recipe_from_config(cfg)
        compressor = self._initial_compressor(grid, hidden_dim)
        set_seed(t.seed)
        self.objective = CompressorObjective.from_recipe(compressor, self.recipe)
        self.generator = torch.Generator(device=self.device).manual_seed(
            t.seed + self.accelerator.process_index)
        self.model, self.critic_opt, self.generator_opt = self.accelerator.prepare(
            self.objective, *make_optimizers(self.objective, self.recipe))

        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_loss, self.best_epoch = math.inf, None
        if resuming:
            self._resume()
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.save(cfg, self.run_dir / "config.yaml", resolve=True)
        self.tracker = (Tracker(self.run_dir, OmegaConf.to_container(cfg, resolve=True),
                                cfg.experiment.use_wandb, cfg.experiment.wandb_project,
                                cfg.experiment.wandb_entity, resume=resuming)
                        if self.is_main else None)
        self.last_evaluation: Evaluation | None = None
        self.last_eval_step = self.last_plot_step = -1
        self.last_eval_label = ""
        self.eval_seconds = 0.0
        self.visualizations: dict[str, Path] = {}

    # ----------------------------------------------------------------------------- setup
    def _initial_compressor(self, grid: int, hidden_dim: int) -> nn.Module:
        """The compressor's start (``model.compressor.init``; ``pca`` is fitted on the first
        ``model.compressor.pca_images`` training images, seeded by ``training.seed``). When
        resuming, the saved state replaces the weights; the start is fitted only where it is pinned
        and frozen (the same start again: its pinned directions and part stay held)."""
        c = self.cfg.model.compressor
        if c.family == "slots":
            return self._initial_slots(grid, hidden_dim)
        if not self.fit_pca:  # the saved state fills the weights (and a pinned start's directions)
            pinned = min(c.pin_pooling, hidden_dim) if c.init == "pca" else 0
            return TokenCompressor(grid, c.output_grid_size, hidden_dim=hidden_dim,
                                   init="avg" if c.init == "pca" else c.init, pinned_dim=pinned)
        check_pca_images(self.cfg, self.train_dataset, len(self.train_source), grid, hidden_dim)
        count = min(c.pca_images, len(self.train_source))
        logger.info("fitting the PCA initialisation of the compressor on %d training images", count)
        return init_compressor(self.train_source.tokens(list(range(count))), c.output_grid_size,
                               init="pca", seed=self.cfg.training.seed, pin_pooling=c.pin_pooling,
                               pin_token=c.pin_token)

    def _initial_slots(self, grid: int, hidden_dim: int) -> SlotCompressor:
        """The slots family's start: ``kmeans`` fitted on the first ``pca_images`` training images
        (:func:`~toconv.models.init_slots`, seeded by ``training.seed``), or ``random`` (and when
        resuming)."""
        c = self.cfg.model.compressor
        if not self.fit_kmeans:
            return SlotCompressor(grid, c.output_grid_size, hidden_dim=hidden_dim)
        count = min(c.pca_images, len(self.train_source))
        logger.info("fitting the k-means start of the slots on %d training images", count)
        return init_slots(self.train_source.tokens(list(range(count))), c.output_grid_size,
                          seed=self.cfg.training.seed)

    def _run_dir(self) -> Path:
        e, m = self.cfg.experiment, self.cfg.model
        name = e.name
        if name is None:
            encoder = "".join(ch if ch.isalnum() or ch in "-_." else "_"
                              for ch in Path(self.cfg.encoder.name).name)
            name = (f"{encoder}-{m.design}-{m.compressor.input_grid_size}to"
                    f"{m.compressor.output_grid_size}-{time.strftime('%Y%m%d-%H%M%S')}")
            name = broadcast_object_list([name])[0] if self.accelerator.num_processes > 1 else name
        return Path(e.output_dir) / name

    def _start_log(self) -> Path:
        """Send toconv's log records to ``run_dir/train.log`` (main process)."""
        path = self.run_dir / "train.log"
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path)
            handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
            package = logging.getLogger("toconv")
            package.setLevel(logging.INFO)
            package.addHandler(handler)
            self._log_handler = handler
        return path

    def encoder(self) -> FrozenEncoder:
        """The frozen encoder, built on first use (a run from a complete cache never builds it)."""
        if self._encoder is None:
            logger.info("loading encoder %s on %s", self.cfg.encoder.name, self.device)
            self._encoder = build_encoder(self.cfg.encoder.name, device=self.device,
                                          dtype=self.cfg.encoder.dtype)
        return self._encoder

    def _sources(self) -> tuple[TokenSource, TokenSource]:
        d = self.cfg.data
        subset = d.subset_size if d.use_subset else None
        datasets = {split: ImageFolderDataset(d.imagenet_root, split=split, val_fraction=d.val_fraction,
                                              subset_size=subset, seed=d.split_seed,
                                              val_size=d.val_size)
                    for split in ("train", "val")}
        for dataset in datasets.values():
            if len(dataset) == 0:
                raise ValueError(empty_split_message(dataset))
        self.train_dataset = datasets["train"]
        shape = preset_token_shape(self.cfg.encoder.name)
        if self.fit_pca and shape is not None:  # before anything is encoded
            check_pca_images(self.cfg, self.train_dataset, len(self.train_dataset), *shape)
        if not d.use_cache:
            logger.info("no feature cache: the encoder runs in the loop")
            return (EncodedImages(datasets["train"], self.encoder(), d.num_workers),
                    EncodedImages(datasets["val"], self.encoder(), d.num_workers))
        cache_dir = (Path(d.cache_dir) if d.cache_dir is not None
                     else default_cache_dir(d.cache_root, self.cfg.encoder.name, datasets))
        with self.accelerator.main_process_first():
            caches = open_or_build_caches(cache_dir, self.cfg.encoder.name, datasets, self.encoder,
                                          self.cfg.encoder.batch_size, d.num_workers,
                                          progress=self.progress)
        per_image = caches["train"].bytes_per_image
        logger.info("feature cache %s: %d bytes per image (%.3f MiB, fp16 patch tokens + CLS)",
                    cache_dir, per_image, per_image / 2**20)
        self.cache_bytes_per_image = per_image
        return CachedTokens(caches["train"], d.num_workers), CachedTokens(caches["val"], d.num_workers)

    def _token_geometry(self) -> tuple[int, int]:
        source = self.train_source
        if isinstance(source, CachedTokens):
            return source.cache.grid_size, source.cache.hidden_dim
        return source.encoder.grid_size, source.encoder.hidden_dim

    def skipped_files(self) -> list[str]:
        """Unique paths skipped in either split (non-images and undecodable images)."""
        paths = {s.path for source in (self.train_source, self.val_source) for s in source.skipped}
        return sorted(paths)

    # ----------------------------------------------------------------------------- checkpoints
    def _modules(self) -> dict[str, nn.Module]:
        o = self.objective
        return {"compressor": o.compressor, "critic": o.critic, "decoder": o.decoder}

    def _metadata(self) -> dict[str, str]:
        return {"encoder": str(self.cfg.encoder.name), "design": self.objective.design.name,
                "recipe": str(self.cfg.recipe),
                "step": str(self.step), "epoch": str(self.epoch)}

    def save_state(self) -> None:
        """Resumable state (all weights, optimizers, counters, RNG) and ``latest.safetensors``."""
        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return
        scaler = self.accelerator.scaler
        trainer = {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "best_loss": self.best_loss, "best_epoch": self.best_epoch,
            "critic_optimizer": self.critic_opt.state_dict(),
            "generator_optimizer": self.generator_opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "rng": checkpoint.rng_state(self.generator),
        }
        checkpoint.save_training_state(self.run_dir, self._modules(), trainer, self._metadata())
        checkpoint.save_compressor(self.objective.compressor, self.run_dir / "latest.safetensors",
                                   self._metadata())

    def _resume(self) -> None:
        state = checkpoint.load_training_state(self.run_dir, self._modules())
        self.critic_opt.load_state_dict(state["critic_optimizer"])
        self.generator_opt.load_state_dict(state["generator_optimizer"])
        if state["scaler"] is not None and self.accelerator.scaler is not None:
            self.accelerator.scaler.load_state_dict(state["scaler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.best_loss, self.best_epoch = state["best_loss"], state["best_epoch"]
        checkpoint.set_rng_state(state["rng"], self.generator)
        logger.info("resumed at step %d (epoch %d, batch %d)", self.step, self.epoch + 1, self.batch_in_epoch)

    # ----------------------------------------------------------------------------- training
    def train_step(self, tokens: Tensor) -> dict[str, float]:
        """One step of :func:`toconv.objective.train_step` on (B, N, C) tokens, through accelerate."""
        acc = self.accelerator
        return train_step(self.objective, tokens, self.critic_opt, self.generator_opt, self.recipe,
                          self.step, self.generator, model=self.model, backward=acc.backward,
                          clip_grad_norm=acc.clip_grad_norm_)

    def _sampler(self, epoch: int, start: int = 0) -> EpochBatches:
        acc = self.accelerator
        return EpochBatches(len(self.train_source), self.cfg.training.batch_size, self.cfg.training.seed,
                            epoch, shuffle=True, rank=acc.process_index, world_size=acc.num_processes,
                            start=start)

    def fit(self) -> dict[str, Any]:
        """Train to ``training.epochs`` (or ``training.max_steps``); return the summary dict."""
        if self.finished is not None:
            return self._report_finished()
        t = self.cfg.training
        steps_per_epoch = len(self._sampler(0))
        total = t.epochs * steps_per_epoch if t.max_steps is None else min(t.max_steps, t.epochs * steps_per_epoch)
        logger.info("training %s for %d steps (%d per epoch, batch %d, n_critic %d) on %s",
                    self.objective.compressor, total, steps_per_epoch, t.batch_size, t.n_critic, self.device)
        bar = tqdm(total=total, initial=min(self.step, total), disable=not self.progress,
                   desc="train", unit="step", dynamic_ncols=True)
        trained_samples, train_started = 0, time.perf_counter()
        while self.epoch < t.epochs and self.step < total:
            for tokens in self.train_source.batches(self._sampler(self.epoch, self.batch_in_epoch)):
                self.batch_in_epoch += 1
                if tokens.shape[0] == 0:  # every image of the batch was undecodable
                    continue
                losses = self.train_step(tokens.to(self.device))
                self.step += 1
                trained_samples += tokens.shape[0]
                bar.update(1)
                bar.set_postfix(epoch=self.epoch + 1, w=f"{losses.get('wasserstein', 0.0):.3f}",
                                rec=f"{losses['reconstruction']:.3f}", cos=f"{losses['cosine']:.3f}")
                if self.tracker is not None and self.step % self.cfg.experiment.log_every_steps == 0:
                    self.tracker.scalars({f"train/{k}": v for k, v in losses.items()}, self.step)
                if self.step >= total:
                    break
                if t.save_every_steps and self.step % t.save_every_steps == 0:
                    self.save_state()
            if self.batch_in_epoch >= steps_per_epoch:
                self._end_epoch()
            else:
                self.save_state()
        bar.close()
        train_seconds = time.perf_counter() - train_started - self.eval_seconds
        if self.last_eval_step != self.step:
            self._evaluate(label="final")
        if self.last_plot_step != self.step:
            self._plot()
        speed = trained_samples / max(train_seconds, 1e-9) if trained_samples else None
        return self._finish(speed)

    def _end_epoch(self) -> None:
        self.epoch += 1
        self.batch_in_epoch = 0
        t = self.cfg.training
        last = self.epoch == t.epochs or (t.max_steps is not None and self.step >= t.max_steps)
        if self.epoch % t.eval_every_epochs == 0 or last:
            self._evaluate(label=str(self.epoch))
            if self.epoch % t.plot_every_epochs == 0 or last:
                self._plot()
        if self.is_main:
            checkpoint.save_compressor(self.objective.compressor,
                                       self.run_dir / f"checkpoint_epoch_{self.epoch}.safetensors",
                                       self._metadata())
        self.save_state()

    def _evaluate(self, label: str) -> None:
        """Validation metrics, logs and the ``best`` checkpoint (main process)."""
        if not self.is_main:
            return
        started = time.perf_counter()
        result = evaluate(self.objective, self.val_source, self.cfg.training.batch_size, self.device,
                          self.accelerator.autocast, seed=self.cfg.training.seed)
        self.tracker.scalars(result.metrics, self.step)
        self.tracker.histogram("val/rf_cosine_distribution", result.per_image.flatten().numpy(), self.step)
        loss = result.metrics["val/reconstruction_loss"]
        logger.info("evaluation %s (step %d): val reconstruction cosine %.4f, RF cosine %.4f, "
                    "Wasserstein %.4f, buckets %s", label, self.step, result.metrics["val/cosine"],
                    result.stats.mean_cosine, result.metrics["val/wasserstein"], result.stats.buckets)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, label
            checkpoint.save_compressor(self.objective.compressor, self.run_dir / "best.safetensors",
                                       self._metadata())
        self.last_evaluation, self.last_eval_step, self.last_eval_label = result, self.step, label
        self.eval_seconds += time.perf_counter() - started

    def _plot(self) -> None:
        """The heatmap and RF example PNGs of the last evaluation (main process)."""
        if not self.is_main:
            return
        started = time.perf_counter()
        self.visualizations = plot_evaluation(self.objective, self.val_source, self.last_evaluation,
                                              self.run_dir / "visualizations", self.last_eval_label,
                                              self.device)
        self.tracker.image("val/rf_heatmap", self.visualizations["heatmap"], self.step)
        self.last_plot_step = self.step
        self.eval_seconds += time.perf_counter() - started

    # ----------------------------------------------------------------------------- summary
    def _report_finished(self) -> dict[str, Any]:
        """Say that the run is already finished, print its summary; change nothing."""
        if self.is_main:
            run = self.finished["run"]
            print(f"run folder {self.run_dir} is already finished (step {run['steps']}, epoch "
                  f"{run['epochs_completed']}); left as it is. Train further with a larger "
                  f"training.epochs or training.max_steps and training.resume=auto.", flush=True)
            print(format_table(summary_rows(self.finished)), flush=True)
        return self.finished if self.is_main else {}

    def _finish(self, samples_per_second: float | None) -> dict[str, Any]:
        """Write ``summary.json``, print the table, close the logs; return the summary."""
        self.accelerator.wait_for_everyone()
        if not self.is_main:
            return {}
        result = self.last_evaluation
        metrics = {k.removeprefix("val/"): v for k, v in result.metrics.items() if k.count("/") == 1}
        skipped = self.skipped_files()
        cache = getattr(self, "cache_bytes_per_image", None)
        g = self.objective.compressor.geometry
        summary = {
            "run": {"folder": str(self.run_dir), "encoder": str(self.cfg.encoder.name),
                    "grid": f"{self.grid}x{self.grid}", "hidden_dim": self.hidden_dim,
                    "design": self.objective.design.name, "recipe": str(self.cfg.recipe), "geometry": f"{g.name}: {g.describe()}",
                    "steps": self.step, "epochs_completed": self.epoch,
                    "wall_seconds": time.perf_counter() - self.started,
                    "train_samples_per_second": samples_per_second},
            "data": {"root": str(self.cfg.data.imagenet_root), "train_images": len(self.train_source),
                     "val_images": len(self.val_source), "skipped_files": len(skipped),
                     "skipped": skipped, "cache_bytes_per_image": cache,
                     "cache": (f"{cache:,} bytes ({cache / 2**20:.3f} MiB)" if cache
                               else "no cache (encoder in the loop)")},
            "validation": {**metrics, "buckets": result.stats.buckets,
                           "row_means": result.stats.row_means.tolist(),
                           "col_means": result.stats.col_means.tolist()},
            "checkpoints": {"latest": str(self.run_dir / "latest.safetensors"),
                            "best": str(self.run_dir / "best.safetensors"), "best_epoch": self.best_epoch},
            "visualizations": {k: str(v) for k, v in self.visualizations.items()},
        }
        write_summary(self.run_dir / "summary.json", summary)
        logger.info("skipped files: %d; feature cache per image: %s", len(skipped), summary["data"]["cache"])
        table = format_table(summary_rows(summary))
        print(table, flush=True)
        with open(self.log_file, "a") as log:
            log.write(table + "\n")
        self.close()
        return summary

    def close(self) -> None:
        if self.tracker is not None:
            self.tracker.close()
        handler = getattr(self, "_log_handler", None)
        if handler is not None:
            logging.getLogger("toconv").removeHandler(handler)
            handler.close()


def empty_split_message(dataset: ImageFolderDataset) -> str:
    """Why a split of ``data.imagenet_root`` has no images, and which key to change."""
    root = dataset.root
    if dataset.num_found == 0:
        where = root / dataset.split if dataset.layout == "imagenet" else root
        return (f"data.imagenet_root: expected images under {where}, found none "
                f"({len(dataset.skipped)} other files skipped)")
    return (f"data.imagenet_root: {root} holds {dataset.num_found} image(s), too few for a "
            f"{dataset.split} split: a plain folder needs at least 2 (the validation share is "
            f"data.val_fraction={dataset.val_fraction} or data.val_size={dataset.val_size})")


def pca_images_needed(grid: int, output_grid_size: int, hidden_dim: int) -> tuple[int, int]:
    """``(images, full RFs per image)``: the PCA start fits more than ``hidden_dim`` full receptive
    fields (windows that lie wholly inside the ``grid`` x ``grid`` token grid)."""
    rf = RFGeometry.from_conv(resolve_geometry(grid, output_grid_size))
    full = int(rf.mask.all(dim=1).sum())
    return hidden_dim // full + 1, full


def check_pca_images(cfg: DictConfig, dataset: ImageFolderDataset, num_train: int, grid: int,
                     hidden_dim: int) -> None:
    """Raise ``ValueError`` when the PCA start (``model.compressor.init=pca``) cannot be fitted on
    ``num_train`` training images of ``grid`` x ``grid`` tokens of width ``hidden_dim``; the
    message names the images needed, the key to change and ``model.compressor.init=avg``."""
    c, d = cfg.model.compressor, cfg.data
    need, full = pca_images_needed(grid, c.output_grid_size, hidden_dim)
    used = min(c.pca_images, num_train)
    if used >= need:
        return
    if c.pca_images < need <= num_train:
        got = f"model.compressor.pca_images={c.pca_images}"
        fix = f"raise model.compressor.pca_images to {need}"
    else:
        got = f"{num_train} training image(s) from data.imagenet_root={dataset.root}"
        if d.use_subset and d.subset_size < need:
            fix = f"raise data.subset_size (now {d.subset_size}) to {need}"
        elif dataset.layout == "imagenet":
            fix = f"put at least {need} images in {dataset.root / 'train'}"
        else:
            images = need
            while images - num_val_images(images, dataset.val_fraction, dataset.val_size) < need:
                images += 1
            fix = (f"pass a folder of at least {images} images ({images - need} of them go to "
                   f"validation with these settings)")
    raise ValueError(
        f"the PCA start (model.compressor.init=pca) of {grid}x{grid} -> {c.output_grid_size}x"
        f"{c.output_grid_size} tokens of width {hidden_dim} needs {need} training images ({full} "
        f"full receptive fields each, more than {hidden_dim} in all), got {got}: {fix}, or "
        f"train on fewer images from the average-pooling start with model.compressor.init=avg")
