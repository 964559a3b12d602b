#!/usr/bin/env bash
# The Dagster UI and daemon for this checkout's instance, as services a script can stop.
#
#   bash scripts/services.sh start    # dagster-webserver on 127.0.0.1:$WSOVVIS_UI_PORT (3000) + dagster-daemon
#   bash scripts/services.sh status   # pid, state, URL, log paths
#   bash scripts/services.sh stop     # SIGTERM each process group, wait, then SIGKILL
#   bash scripts/services.sh start webserver   # only some: webserver, daemon
#
# PID files and logs: $WSOVVIS_SERVICES_DIR (default $DAGSTER_HOME/services/). Why not
# `dagster dev &`: a background job of a script starts with SIGINT ignored, and Dagster routes
# SIGTERM to the SIGINT handler, so it ignores both and only SIGKILL ends it (leaving its code
# server and run workers behind). Here each service starts in its own session (setsid: the pid
# is the process group, so stop ends the code servers and run workers it started too) with
# SIGINT and SIGTERM reset to their defaults (env --default-signal). Loopback only: the UI has
# no login (README, "Exposing the UI").
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
  # shellcheck disable=SC1091
  source .venv/bin/activate  # DAGSTER_HOME, PYTHONPATH (scripts/setup.sh)
fi
: "${DAGSTER_HOME:?DAGSTER_HOME is not set: run bash scripts/setup.sh, then source .venv/bin/activate}"
DIR=${WSOVVIS_SERVICES_DIR:-$DAGSTER_HOME/services}
PORT=${WSOVVIS_UI_PORT:-3000}
STOP_TIMEOUT=${WSOVVIS_STOP_TIMEOUT:-30}
START_TIMEOUT=${WSOVVIS_START_TIMEOUT:-120}
ALL=(webserver daemon)

command_of() {
  case "$1" in
    webserver) echo "dagster-webserver -h 127.0.0.1 -p $PORT -w $ROOT/workspace.yaml" ;;
    daemon) echo "dagster-daemon run -w $ROOT/workspace.yaml" ;;
  esac
}

pid_of() {  # the recorded pid if the service's own process is alive, else nothing
  local file="$DIR/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  # the leader itself: a killed daemon's code server lingers ~45 s in its group, but the
  # service is gone (its leftovers: leftover_of)
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
  case "$(ps -o stat= -p "$pid" 2>/dev/null)" in
    Z* | "") ;;  # a zombie is not a running service
    *) echo "$pid" ;;
  esac
}

leftover_of() {  # the recorded pid of a service that died while its group lives on
  local file="$DIR/$1.pid" pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if [ -n "$pid" ] && [ -z "$(pid_of "$1")" ] && kill -0 -- "-$pid" 2>/dev/null; then
    echo "$pid"
  fi
}

stop_group() {  # SIGTERM a process group, wait up to STOP_TIMEOUT, then SIGKILL it
  local svc=$1 pid=$2
  kill -TERM -- "-$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 -- "-$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.5; done
  if kill -0 -- "-$pid" 2>/dev/null; then
    echo "[services] $svc (pid $pid) still running after ${STOP_TIMEOUT}s: SIGKILL" >&2
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
}

start() {
  mkdir -p "$DIR"
  for svc in "${SERVICES[@]}"; do
    if [ -n "$(pid_of "$svc")" ]; then
      echo "[services] $svc already running (pid $(pid_of "$svc"))"
      continue
    fi
    local dead
    dead=$(leftover_of "$svc")
    if [ -n "$dead" ]; then
      echo "[services] $svc (pid $dead) had died; stopping the processes it left (group $dead)"
      stop_group "$svc" "$dead"
    fi
    # shellcheck disable=SC2046
    setsid env --default-signal=INT,TERM $(command_of "$svc") \
      </dev/null >>"$DIR/$svc.log" 2>&1 &
    echo $! >"$DIR/$svc.pid"
    for _ in $(seq 50); do kill -0 -- "-$!" 2>/dev/null && break; sleep 0.1; done  # setsid done
    echo "[services] started $svc (pid $!, log $DIR/$svc.log)"
  done
  [ -n "$(pid_of webserver)" ] || return 0
  # ready = a webserver of *this* instance (not another one on the port) answers and has
  # loaded the code location
  local deadline=$((SECONDS + START_TIMEOUT))
  until python - "$PORT" "$DAGSTER_HOME" <<'PY' 2>/dev/null
import json, os, sys, urllib.request
q = (b'{"query": "{ instance { info } workspaceOrError { ... on Workspace { locationEntries'
     b' { loadStatus } } } }"}')
req = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/graphql", data=q,
                             headers={"Content-Type": "application/json"})
data = json.load(urllib.request.urlopen(req, timeout=5))["data"]
ours = f"base_dir: {os.path.realpath(sys.argv[2])}\n" in data["instance"]["info"] or \
    f"base_dir: {sys.argv[2]}\n" in data["instance"]["info"]
entries = data["workspaceOrError"]["locationEntries"]
sys.exit(0 if ours and all(e["loadStatus"] == "LOADED" for e in entries) else 1)
PY
  do
    for svc in "${SERVICES[@]}"; do
      if [ -z "$(pid_of "$svc")" ]; then
        echo "[services] $svc exited; last lines of $DIR/$svc.log:" >&2
        tail -n 20 "$DIR/$svc.log" >&2
        stop
        exit 1
      fi
    done
    if [ $SECONDS -ge $deadline ]; then
      echo "[services] the webserver did not load the code location in ${START_TIMEOUT}s" >&2
      exit 1
    fi
    sleep 1
  done
  echo "[services] UI at http://127.0.0.1:$PORT (DAGSTER_HOME=$DAGSTER_HOME)"
}

stop() {
  for svc in "${SERVICES[@]}"; do
    local pid
    pid=$(pid_of "$svc")
    [ -n "$pid" ] || pid=$(leftover_of "$svc")
    if [ -z "$pid" ]; then
      rm -f "$DIR/$svc.pid"
      continue
    fi
    stop_group "$svc" "$pid"
    rm -f "$DIR/$svc.pid"
    echo "[services] stopped $svc (pid $pid)"
  done
}

status() {
  local down=0
  for svc in "${SERVICES[@]}"; do
    local pid
    pid=$(pid_of "$svc")
    if [ -n "$pid" ]; then
      echo "$svc: running (pid $pid, log $DIR/$svc.log)"
    elif [ -n "$(leftover_of "$svc")" ]; then
      echo "$svc: dead (pid $(leftover_of "$svc") exited; its leftover processes go with" \
        "'services.sh start' or 'stop')"
      down=1
    else
      echo "$svc: stopped"
      down=1
    fi
  done
  [ $down -eq 0 ] && echo "UI: http://127.0.0.1:$PORT"
  return $down
}

ACTION=${1:-}
shift || true
if [ $# -gt 0 ]; then SERVICES=("$@"); else SERVICES=("${ALL[@]}"); fi
for svc in "${SERVICES[@]}"; do
  case "$svc" in webserver | daemon) ;; *) echo "unknown service '$svc'" >&2; exit 2 ;; esac
done
case "$ACTION" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  restart) stop; start ;;
  *) echo "usage: bash scripts/services.sh start|stop|status|restart [webserver] [daemon]" >&2
     exit 2 ;;
esac
