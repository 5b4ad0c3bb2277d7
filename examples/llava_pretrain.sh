#!/usr/bin/env bash
# LLaVA-1.5 stage-1 pretraining (projector + token compressor) with 144 image tokens instead
# of 576. Same arguments as LLaVA's scripts/v1_5/pretrain.sh, launched through
# `python -m llava_patch.train`, which adds the compression flags to LLaVA's training script.
#
#   LLAVA=path/to/LLaVA-repo DATA=path/to/LLaVA-Pretrain bash examples/llava_pretrain.sh
#
# COMPRESSOR: a toconv checkpoint (e.g. runs/x/best.safetensors) to start from; leave it empty to
# start from average pooling. FREEZE=True keeps it fixed (plug-in mode), False trains it jointly.
# The output folder gets mm_projector.bin and mm_projector.token_compressor.safetensors; pass
# the former as --pretrain_mm_mlp_adapter in stage 2 and the compressor is restored with it.
set -euo pipefail

LLAVA=${LLAVA:?path to a LLaVA checkout (for scripts/zero2.json)}
DATA=${DATA:?folder with blip_laion_cc_sbu_558k.json and images/}
COMPRESSOR=${COMPRESSOR:-}
FREEZE=${FREEZE:-False}
OUT=${OUT:-./checkpoints/llava-v1.5-7b-toconv12-pretrain}
GPUS=${GPUS:-8}

torchrun --nproc_per_node "$GPUS" -m llava_patch.train \
    --deepspeed "$LLAVA/scripts/zero2.json" \
    --attn_implementation flash_attention_2 \
    --model_name_or_path lmsys/vicuna-7b-v1.5 \
    --version plain \
    --data_path "$DATA/blip_laion_cc_sbu_558k.json" \
    --image_folder "$DATA/images" \
    --vision_tower openai/clip-vit-large-patch14-336 \
    --mm_projector_type mlp2x_gelu \
    --tune_mm_mlp_adapter True \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --use_token_compression True \
    --compression_input_size 24 \
    --compression_output_size 12 \
    ${COMPRESSOR:+--compression_checkpoint "$COMPRESSOR"} \
    --freeze_token_compressor "$FREEZE" \
    --bf16 True \
    --output_dir "$OUT" \
    --num_train_epochs 1 \
    --per_device_train_batch_size 32 \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps 1 \
    --evaluation_strategy "no" \
    --save_strategy "steps" \
    --save_steps 24000 \
    --save_total_limit 1 \
    --learning_rate 1e-3 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type "cosine" \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to none
