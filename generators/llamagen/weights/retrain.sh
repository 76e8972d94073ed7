#!/usr/bin/env bash
# Retrain the demo weights shipped here (demo_vq.safetensors, demo_gpt.safetensors) from nothing but the
# installed packages, with the project's own trainers, on CPU:
#
#   dataset -> image folder -> train-vq -> extract-codes -> train-gpt -> export (weights + config only)
#
# Usage: generators/llamagen/weights/retrain.sh [WORK_DIR]   (default: a fresh temporary folder)
# The exports replace the files beside this script; pin their new sha256 in generators/llamagen/presets.py
# (SHA256) and update README.md here (losses from WORK_DIR/{vq,gpt}/log.jsonl, FIDs).
# CPU training is deterministic for a given machine and thread count, not across them: a retrain elsewhere
# gives equivalent weights, not the same bytes.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-$(mktemp -d -t bench-demo-XXXXXX)}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
echo "work folder: $WORK"

# 1. The demo dataset as an ImageNet-style folder: 8 classes x 500 crops, 64x64 (bench/demo/README.md).
python -m bench.demo train "$WORK/train"

# 2. Tokenizer: VQ-demo (64 px -> 8x8 codes of a 512-entry codebook). L2 reconstruction + codebook terms for the
#    first 400 steps, then LlamaGen's PatchGAN (hinge losses, weight 0.5) balanced by taming's adaptive weight (the
#    GAN gradient at the decoder's last layer scaled to half the reconstruction's: without LPIPS, a fixed weight
#    of 0.5 swamps the L2 term). No LPIPS: its VGG weights need a download (pass --lpips-heads/--vgg-weights and
#    drop --perceptual-weight 0 to use them). The entropy term keeps the whole codebook in use (without it the
#    run settles on ~40 of the 512 codes).
VQ_STEPS=1600
bench llamagen train-vq "$WORK/train" -o "$WORK/vq" --vq-model VQ-demo --image-size 64 \
    --global-batch-size 32 --max-steps "$VQ_STEPS" --lr 1e-3 --entropy-loss-ratio 0.1 --perceptual-weight 0 \
    --disc-start 401 --disc-weight 0.5 --disc-adaptive-weight \
    --mixed-precision none --num-workers 1 --log-every 25 --ckpt-every 200 --seed 0
VQ_CKPT="$WORK/vq/checkpoints/$(printf %07d "$VQ_STEPS")/model.pt"

# 3. Codes: each training image and its mirror (2 views), encoded once.
bench llamagen extract-codes "$WORK/train" -o "$WORK/codes" --vq-ckpt "$VQ_CKPT" --image-size 64 \
    --batch-size 64 --num-workers 0 --device cpu

# 4. GPT-demo on the codes (8 classes, 64 tokens, class dropout 0.1 for classifier-free guidance).
GPT_STEPS=1200
bench llamagen train-gpt "$WORK/codes" -o "$WORK/gpt" --gpt-model GPT-demo --global-batch-size 64 \
    --max-steps "$GPT_STEPS" --lr 1e-3 --mixed-precision none --num-workers 0 --log-every 25 \
    --ckpt-every "$GPT_STEPS" --seed 0
GPT_CKPT="$WORK/gpt/checkpoints/$(printf %07d "$GPT_STEPS")/model.pt"

# 5. Export: weights only (float16), the model config as safetensors metadata.
bench llamagen export "$VQ_CKPT" "$HERE/demo_vq.safetensors"
bench llamagen export "$GPT_CKPT" "$HERE/demo_gpt.safetensors"
sha256sum "$HERE/demo_vq.safetensors" "$HERE/demo_gpt.safetensors"
echo "pin these sha256 in generators/llamagen/presets.py (SHA256), then run tests/test_llamagen_demo.py"
