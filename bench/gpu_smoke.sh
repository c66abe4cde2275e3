#!/usr/bin/env bash
# GPU smoke run: the whole pipeline on the embedded default model at bf16 on one CUDA device, with
# wall time, CPU time, peak RSS and torch.cuda.max_memory_allocated per stage (bench/pipeline.py),
# then the training-step and attribution benches on the GPU, then (with 2+ GPUs) a 2-process run.
# Not part of CI: it needs a CUDA build of torch and a GPU.
#
#   bash bench/gpu_smoke.sh [MODEL] [BUDGET]      # defaults: embedded:qwen2.5-coder-0.5b-instruct demo
#
# Environment: PYTHON (default .venv/bin/python, else python3), OUT (default runs/gpu-smoke).
set -euo pipefail
cd "$(dirname "$0")/.."

MODEL=${1:-embedded:qwen2.5-coder-0.5b-instruct}
BUDGET=${2:-demo}
OUT=${OUT:-runs/gpu-smoke}
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1} TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"

"$PYTHON" - <<'EOF'
import sys, torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_smoke: torch {torch.__version__} sees no CUDA device (the CPU wheel? `pip install torch==2.13.0` "
             "from PyPI on Linux is the CUDA build)")
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"gpu_smoke: cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, bf16 {torch.cuda.is_bf16_supported()}")
print(f"gpu_smoke: torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
mkdir -p "$OUT"

echo "== pipeline: $MODEL, --budget $BUDGET, --device cuda (bf16 by default)"
"$PYTHON" bench/pipeline.py --model "$MODEL" --budget "$BUDGET" --device cuda --run-dir "$OUT/one-gpu" --force \
    --json "$OUT/pipeline.json"

echo "== pipeline again with gradient checkpointing in training (unlearn only; compare its CUDA peak)"
"$PYTHON" - "$MODEL" "$BUDGET" "$OUT" <<'EOF'
import sys, time, torch
from pathlib import Path
from agmask.config import RunConfig
from agmask.pipeline import run_stage
from agmask.session import Session
model, budget, out = sys.argv[1:4]
cfg = RunConfig(model=model, budget=budget, device="cuda", run_dir=Path(out) / "one-gpu", force=True,
                gradient_checkpointing=True)
session = Session.create(cfg)
session.model()
torch.cuda.reset_peak_memory_stats()
t0 = time.perf_counter()
run_stage(session, "unlearn")
print(f"unlearn with gradient checkpointing: {time.perf_counter() - t0:.1f} s, "
      f"CUDA peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
EOF

echo "== masked vs plain LoRA step (cuda)"
"$PYTHON" bench/train_step.py --model "$MODEL" --device cuda --steps 10
echo "== attribution cost (cuda)"
"$PYTHON" bench/attribution.py --model "$MODEL" --device cuda

NGPU=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
if [ "$NGPU" -ge 2 ]; then
    echo "== data parallel: $NGPU processes, one GPU each"
    start=$(date +%s)
    "$PYTHON" -m accelerate.commands.launch --multi_gpu --num_processes "$NGPU" --num_machines 1 \
        --mixed_precision no --dynamo_backend no -m agmask.cli.main run --model "$MODEL" --budget "$BUDGET" \
        --device cuda --run-dir "$OUT/multi-gpu" --force --quiet
    echo "multi-GPU run: $(( $(date +%s) - start )) s wall (DONE seconds per stage:)"
    for f in "$OUT"/multi-gpu/*/DONE; do
        [ -f "$f" ] && "$PYTHON" -c "import json,sys; d=json.load(open(sys.argv[1])); print(f\"  {d['stage']:<11} {d['seconds']:8.1f} s\")" "$f"
    done
fi
echo "gpu_smoke: done; artefacts in $OUT"
