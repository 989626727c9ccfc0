# Sourced by server_instructions.sh and ws_server_instructions.sh: what both do to put a server
# under callgrind and wait until it answers. After `callgrind_server NAME PORT READY_COMMAND...`
# (the server command in the array `argv`, run in bench/apps with BENCH_PORT=PORT), `$server` is
# its pid and its dumps go to "$outdir/NAME.PID.DUMP-THREAD"; READY_COMMAND is retried until it
# succeeds. Needs `here` (the bench directory) set by the caller.
callgrind_server() {
    local name=$1 port=$2; shift 2
    outdir=${TMPDIR:-/tmp}/server-instructions; mkdir -p "$outdir"; rm -f "$outdir/$name".*
    [ -e "${argv[0]}" ] && argv[0]=$(cd "$(dirname "${argv[0]}")" && pwd)/$(basename "${argv[0]}")  # a relative interpreter path
    cd "$here/apps"
    BENCH_PORT=$port valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$outdir/$name.%p" "${argv[@]}" \
        > "$outdir/$name.log" 2>&1 &
    server=$!
    for _ in $(seq 1 600); do
        kill -0 "$server" 2> /dev/null || { echo "the server exited:"; tail -5 "$outdir/$name.log"; exit 1; }
        "$@" > /dev/null 2>&1 && return 0; sleep 0.5
    done
    echo "the server did not answer"; exit 1
}
