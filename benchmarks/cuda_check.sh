#!/bin/bash
# The CUDA check of docs/performance.md ("On a GPU"), as one command that fits a short GPU lease:
#   bash benchmarks/cuda_check.sh OUT_DIR [SECONDS]
# Needs python3 with torch (CUDA), factlens's dependencies and bitsandbytes importable (PYTHONPATH
# may point at them; the repository root is added). Runs the bitsandbytes comparison tests and the
# GPU digest test, then benchmarks/main_job.py --scaling one size per process (Gemma 3 1B first: if
# it fails, the larger sizes are not tried), each within what is left of SECONDS (default 580). Writes OUT_DIR/log.txt
# and two JSON files per size, and profiles.tgz (cProfile files per size and stage); a size cut by the
# deadline leaves its stages so far in the log. Exit status 1 when a step failed or ran out of time.
# The timings carry cProfile's overhead (Python-heavy stages more): for the table, run main_job.py
# without --profile.
set -u -o pipefail
out=${1:?usage: bash benchmarks/cuda_check.sh OUT_DIR [SECONDS]}
out=$(realpath -m "$out")
cd "$(dirname "$0")/.."  # the repository root, whatever the caller's folder
budget=${2:-580}
sizes=${SIZES:-gemma3-1b llama3-8b gemma2-9b}  # SIZES, DEVICE, OPTIMIZER: for a trial on the CPU (SIZES=tiny)
device=${DEVICE:-cuda}
optimizer=${OPTIMIZER:-adamw8bit}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD"
{
date -u
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
python3 -c "import torch, transformer_lens, bitsandbytes, transformers, factlens; print('torch', torch.__version__,
 'cuda', torch.version.cuda, 'bitsandbytes', bitsandbytes.__version__, 'transformers', transformers.__version__,
 torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')" || exit 1
status=0
echo "== bitsandbytes comparisons $(date +%T)"
FACTLENS_TEST_BITSANDBYTES=1 timeout 90 python3 -m pytest tests/evaluation/test_attacks.py -k bitsandbytes -q \
    -p no:cacheprovider -o addopts="--import-mode=importlib" -rs || status=1
echo "== digests of GPU tensors $(date +%T)"  # the runner's change check hashes a GPU model where it is
timeout 60 python3 -m pytest tests/test_digests.py -k gpu -q -p no:cacheprovider -o addopts="--import-mode=importlib" \
    -rs || status=1
for size in $sizes; do
  left=$((budget - SECONDS)); t=$left; [ "$size" = "${sizes%% *}" ] && t=$((left < 120 ? left : 120))
  [ "$t" -le 10 ] && { echo "== $size: no time left"; status=1; continue; }
  echo "== $size $(date +%T), at most ${t} s"
  timeout "$t" python3 benchmarks/main_job.py --scaling --sizes "$size" --variants runner --device "$device" \
      --dtype bfloat16 --optimizer "$optimizer" --scaling-steps 2 --threads "$(nproc)" --json "$out/scaling_cuda_$size.json" \
      --profile "$out/profiles"
  rc=$?; echo "rc=$rc $(date +%T), ${SECONDS} s since the start"; [ "$rc" = 0 ] || status=1
  [ "$size" = "${sizes%% *}" ] && [ "$rc" != 0 ] && { echo "$size failed: the larger sizes are not tried"; break; }
done
# one cProfile file per size and stage (the edit stage's CPU time at 9B is unexplained), packed in one file
if [ -d "$out/profiles" ]; then tar czf "$out/profiles.tgz" -C "$out" profiles && rm -r "$out/profiles"; fi
exit $status
} 2>&1 | tee "$out/log.txt"
