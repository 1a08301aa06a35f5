#!/usr/bin/env bash
# The demo model's training recipe, end to end: a training set from chartbench's teacher, then
# `python -m trainer train` from BASE. Run from the repository root; stagewise/model/TRAINING.md says
# which values made the shipped model. Everything is an environment variable:
#   BASE     model folder to start from            (default stagewise/model: continue the shipped one)
#   MODEL    where the trained model is written    (default $WORK/model)
#   WORK     scratch folder for data and checkpoints (default /tmp/stagewise-retrain)
#   CHARTS   training charts                        (default 150000)
#   SEED     training-set seed                      (default 11)
#   MINUTES  training time limit                    (default 6)
#   BATCH    examples per optimizer step            (default 128)
#   LR       learning rate of the first epoch       (default 1e-3; halved each epoch)
#   EPOCHS   passes over the set                    (default 3)
#   PROCS    processes writing the set and loading batches (default: every core)
#   ONPOLICY charts whose answers BASE samples for on-policy judge examples, added twice (default 0: none)
#   ONPOLICY_T  temperatures they are sampled at    (default 1.5,2.0)
#   ONPOLICY_TYPES  question types they are drawn from, repeats weighting (default: all, evenly)
#   ONPOLICY_STAGES stages also sampled one at a time after the teacher's earlier ones (default conclusion; empty: none)
set -euo pipefail
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/stagewise-retrain}
BASE=${BASE:-stagewise/model}
MODEL=${MODEL:-$WORK/model}
PROCS=${PROCS:-$(nproc)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$WORK"
t0=$(date +%s)
"$PY" -m chartbench trainset "$WORK/data" --n "${CHARTS:-150000}" --seed "${SEED:-11}" --judges 1 --checks 0.3 \
    --judge-kinds summary,caption,caption,reasoning,conclusion,answer,answer --workers "$PROCS"
if [ "${ONPOLICY:-0}" -gt 0 ]; then
    "$PY" -m chartbench onpolicy "$WORK/data" --model "$BASE" --n "$ONPOLICY" --seed $(( ${SEED:-11} + 10 )) \
        --temperatures "${ONPOLICY_T:-1.5,2.0}" --top-p 0.95 --batch 1000 --workers "$PROCS" \
        --stages "${ONPOLICY_STAGES-conclusion}" ${ONPOLICY_TYPES:+--types "$ONPOLICY_TYPES"}
    cat "$WORK/data/onpolicy.jsonl" "$WORK/data/onpolicy.jsonl" >> "$WORK/data/train.jsonl"
fi
t1=$(date +%s)
"$PY" -m trainer train "$WORK/data/train.jsonl" --base "$BASE" --out "$MODEL" --lr "${LR:-1e-3}" --lr-decay 0.5 \
    --epochs "${EPOCHS:-3}" --batch-size "${BATCH:-128}" --grad-accum 1 --max-minutes "${MINUTES:-6}" \
    --workers "$(( PROCS > 1 ? PROCS - 1 : 0 ))" --seed 44 --no-progress
t2=$(date +%s)
"$PY" -m trainer.summary "$MODEL/run.json"
echo "data $((t1 - t0)) s, training $((t2 - t1)) s"
