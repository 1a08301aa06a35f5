#!/usr/bin/env bash
# The shipped judge's recipe (run T's, stagewise/model/TRAINING.md), end to end, sized for a GPU session:
# judge and pre-check rows from chartbench's teacher, on-policy pairs from BASE's own samples (whole answers,
# and captions, reasonings and conclusions sampled stage by stage), one mix without traces, `python -m trainer
# train` from BASE, then the judge benchmarks. Run from the repository root; every size is a variable:
#   BASE     the generator to start from and sample   (default stagewise/model)
#   WORK     scratch folder                           (default /tmp/stagewise-judge)
#   MODEL    where the judge is written               (default $WORK/judge)
#   CHARTS   teacher charts (plus a third as many for each of two focus sets)   (default 18000, run T's)
#   ANSWERS  charts whose whole answers BASE samples, 4 each, at T 2.0 and 1.5  (default 2800)
#   STAGE_CHARTS  charts whose stages BASE samples one at a time, at T 2.0      (default 1200)
#   STAGES   the stages sampled one at a time         (default caption,reasoning,conclusion)
#   SEED     first seed (the sets take SEED, SEED+2, ...)                         (default 191)
#   MINUTES  training time limit (default 5)   BATCH examples per step (default 128)
#   LR       first epoch's learning rate, halved each epoch (default 1e-3)   EPOCHS (default 3)
#   PROCS    processes writing the sets and loading batches (default: every core)
#   GATE     charts per judge kind in the closing benchmarks (default 100; 0: skip them)
set -euo pipefail
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/stagewise-judge}
BASE=${BASE:-stagewise/model}
MODEL=${MODEL:-$WORK/judge}
CHARTS=${CHARTS:-18000}
SEED=${SEED:-191}
PROCS=${PROCS:-$(nproc)}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
mkdir -p "$WORK"
t0=$(date +%s)
lap() { echo "== $1: $(( $(date +%s) - t0 )) s"; }
TY=bar_tallest,bar_shortest,bar_value,bar_difference,bar_count,bar_choice,line_value,line_peak,line_range,line_count,line_trend,bar_value,bar_difference
"$PY" -m chartbench trainset "$WORK/teacher" --n "$CHARTS" --seed "$SEED" --judges 1 --checks 0.3 --types $TY \
    --judge-kinds summary,caption,caption,reasoning,reasoning,reasoning,conclusion,answer,answer,answer --workers "$PROCS"
"$PY" -m chartbench trainset "$WORK/focus_reasoning" --n $(( CHARTS / 3 )) --seed $(( SEED + 2 )) --judges 1 --checks 0 \
    --types bar_tallest,bar_shortest,bar_choice --judge-kinds reasoning --workers "$PROCS"
"$PY" -m chartbench trainset "$WORK/focus_colour" --n $(( CHARTS / 3 )) --seed $(( SEED + 4 )) --judges 1 --checks 0 \
    --types bar_tallest,bar_tallest,bar_tallest,bar_shortest,bar_shortest,bar_shortest,bar_choice,line_trend,bar_value,bar_difference \
    --judge-kinds answer,conclusion --workers "$PROCS"
lap "teacher sets"
"$PY" -m chartbench onpolicy "$WORK/answers" --model "$BASE" --n "${ANSWERS:-2800}" --seed $(( SEED + 6 )) --samples 4 \
    --temperatures 2.0,1.5 --top-p 0.95 --batch 1000 --workers "$PROCS"
lap "on-policy answers"
"$PY" -m chartbench onpolicy "$WORK/stages" --model "$BASE" --n "${STAGE_CHARTS:-1200}" --seed $(( SEED + 8 )) --samples 4 \
    --temperatures 2.0 --top-p 0.95 --batch 1000 --workers "$PROCS" --stages "${STAGES:-caption,reasoning,conclusion}"
lap "on-policy stages"
"$PY" -m chartbench mix "$WORK/mix.jsonl" --drop trace "$WORK/teacher/train.jsonl" "$WORK/focus_reasoning/train.jsonl" \
    "$WORK/focus_colour/train.jsonl" "$WORK/answers/onpolicy.jsonl" "$WORK/stages/onpolicy.jsonl:2"
"$PY" -m trainer train "$WORK/mix.jsonl" --base "$BASE" --out "$MODEL" --lr "${LR:-1e-3}" --lr-decay 0.5 \
    --epochs "${EPOCHS:-3}" --batch-size "${BATCH:-128}" --grad-accum 1 --max-minutes "${MINUTES:-5}" \
    --workers "$(( PROCS > 1 ? PROCS - 1 : 0 ))" --seed 58 --no-progress
lap "training"
"$PY" -m trainer.summary "$MODEL/run.json"
if [ "${GATE:-100}" -gt 0 ]; then
    "$PY" -m chartbench judges "$MODEL" --n "${GATE:-100}"
    "$PY" -m chartbench judges "$MODEL" --n "${GATE:-100}" --by-type answer
    lap "judge benchmarks"
fi
