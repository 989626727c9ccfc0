#!/bin/bash
# Instructions per request of a real server process on real sockets, per thread and scenario.
# The server runs under callgrind (--separate-threads); after a warm-up, each scenario gets
# exactly N requests over C keep-alive connections (bench/keepalive_client.py) and a dump
# (callgrind_control), so each dump's total / N is that scenario's cost per request, kernel
# time excluded. Deterministic enough to compare servers; a run takes a few minutes.
#
#   bench/server_instructions.sh mount 18331 1000 64 -- .venv/bin/python mount_app.py --disable-openapi --log-level WARNING
#   bench/server_instructions.sh uvicorn 18332 1000 64 -- .venv/bin/python -m uvicorn starlette_app:app \
#       --host 127.0.0.1 --port 18332 --loop uvloop --http httptools --ws websockets-sansio --log-level warning --no-access-log
#
# (the server command runs in bench/apps; BENCH_PORT is set to PORT; output in $TMPDIR/server-instructions;
# SCENARIOS="PATH:METHOD ..." replaces the five scenarios, e.g. "/sync:GET /sync/json:GET" for the
# sync handlers of apps/http_app.py)
set -e
name=$1 port=$2 n=$3 c=$4; shift 5
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
argv=("$@")
. "$here/callgrind_server.sh"
callgrind_server "$name" "$port" "$py" "$here/keepalive_client.py" "$port" 1 1 /
scenarios=${SCENARIOS:-"/:GET /json:GET /user/12345:GET /q?name=bench:GET /echo:POST"}
for s in $scenarios; do "$py" "$here/keepalive_client.py" "$port" 300 "$c" "${s%%:*}" "${s##*:}" > /dev/null; done
callgrind_control --zero "$server" > /dev/null 2>&1
for s in $scenarios; do
    "$py" "$here/keepalive_client.py" "$port" "$n" "$c" "${s%%:*}" "${s##*:}" > /dev/null
    callgrind_control --dump="$(echo "${s%%:*}" | tr -c 'a-z0-9\n' _)" "$server" > /dev/null 2>&1
done
kill -INT "$server"; wait "$server" || true
for f in $(ls "$outdir/$name".*.*-* | sort); do  # NAME.PID.DUMP-THREAD
    total=$(grep -m1 '^totals:' "$f" | awk '{print $2}')
    what=$(grep -m1 '^desc: Trigger' "$f" | cut -d' ' -f3-)
    echo "$(basename "$f") [$what] $total instructions, $((total / n)) per request"
done
