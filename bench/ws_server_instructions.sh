#!/bin/bash
# Instructions per echoed WebSocket message of a real server process on a real socket: the
# WebSocket counterpart of bench/server_instructions.sh. The server runs under callgrind
# (--separate-threads); after 500 warm-up messages, exactly N messages are echoed over one
# connection (bench/ws_echo_client.py) between a zero and a dump (callgrind_control), so the
# dump's total / N is the cost per message, kernel time excluded.
#
#   bench/ws_server_instructions.sh sync 18401 /sync/ws 2000 -- .venv/bin/python /tmp/sc/ws_sync_app.py
#   bench/ws_server_instructions.sh raw 18404 /ws 2000 -- bench/.venv-raw/bin/python raw_server.py
#
# (the server command runs in bench/apps; BENCH_PORT is set to PORT; output in $TMPDIR/server-instructions)
set -e
name=$1 port=$2 path=$3 n=$4; shift 5
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
argv=("$@")
. "$here/callgrind_server.sh"
callgrind_server "$name" "$port" "$py" "$here/ws_echo_client.py" "$port" "$path" 1
"$py" "$here/ws_echo_client.py" "$port" "$path" 500 > /dev/null
callgrind_control --zero "$server" > /dev/null 2>&1
"$py" "$here/ws_echo_client.py" "$port" "$path" "$n" > /dev/null
callgrind_control --dump=messages "$server" > /dev/null 2>&1
kill -INT "$server"; wait "$server" || true
for f in $(ls "$outdir/$name".*.*-* | sort); do  # NAME.PID.DUMP-THREAD
    total=$(grep -m1 '^totals:' "$f" | awk '{print $2}')
    echo "$(basename "$f") $total instructions, $((total / n)) per message"
done
