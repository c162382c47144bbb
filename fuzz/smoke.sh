#!/usr/bin/env bash
# Smoke-fuzzes every cargo-fuzz target of metrics_prometheus for FUZZ_SECONDS
# seconds each (default 60), one after the other, and prints per target the
# number of inputs executed. Exits non-zero if any target crashes (panic,
# failed assertion, sanitizer report, timeout, OOM) or does not build.
#
#   bash fuzz/smoke.sh                                     # from any directory
#   FUZZ_SECONDS=10 bash fuzz/smoke.sh
#   FUZZ_TARGETS="render accept" ...                       # a subset
#   FUZZ_SANITIZER=none ...                                # faster, no ASan (default: address)
#   FUZZ_JOBS=2 ...                                        # two targets at a time (default 1)
#
# The targets fuzz the pure engine crate (../engine), which needs neither uWSGI
# nor libclang. It relies on cargo-fuzz, which t/setup.sh installs into
# $MP_ENV/cargo/bin (default ~/.cache/metrics_prometheus/cargo/bin); this script
# runs that copy (or else the cargo-fuzz on PATH) and never installs anything.
# It also relies on a stable toolchain: cargo-fuzz's sanitizer
# flag (-Zsanitizer=address) is a nightly option, so RUSTC_BOOTSTRAP=1 is
# exported for the build. With FUZZ_SANITIZER=none no nightly flag is used.
#
# Writes only under this directory: target/ (build, and target/smoke/*.log),
# corpus/<target>/ (inputs libFuzzer finds; git-ignored except seed-*) and
# artifacts/<target>/ (crashing inputs).
set -uo pipefail

FUZZ_DIR="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
SECS="${FUZZ_SECONDS:-60}"
SAN="${FUZZ_SANITIZER:-address}"

die() { echo "smoke.sh: $*" >&2; exit 2; }

[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_SECONDS must be a positive integer, got '$SECS'"
MP_ENV="${MP_ENV:-${XDG_CACHE_HOME:-$HOME/.cache}/metrics_prometheus}"
export PATH="$MP_ENV/cargo/bin:$PATH"
# Run as `cargo fuzz` runs it (`cargo-fuzz fuzz ARGS`), but by path: `cargo fuzz` would prefer
# a copy in ~/.cargo/bin whenever that directory is not on PATH.
CARGO_FUZZ=$(command -v cargo-fuzz) ||
    die "cargo-fuzz not found in $MP_ENV/cargo/bin nor on PATH: run \`bash t/setup.sh\`"
cargo_fuzz() { "$CARGO_FUZZ" fuzz "$@"; }
echo "== $(cargo_fuzz --version) ($CARGO_FUZZ)"

export RUSTC_BOOTSTRAP=1
LOG_DIR="$FUZZ_DIR/target/smoke"
mkdir -p "$LOG_DIR"
t0=$(date +%s)

echo "== building fuzz targets (sanitizer: $SAN)"
if ! cargo_fuzz build --fuzz-dir "$FUZZ_DIR" --sanitizer "$SAN" >"$LOG_DIR/build.log" 2>&1; then
    tail -n 40 "$LOG_DIR/build.log" >&2
    die "build failed (full log: $LOG_DIR/build.log)"
fi
t_build=$(($(date +%s) - t0))
echo "   built in ${t_build}s"

if [[ -n "${FUZZ_TARGETS:-}" ]]; then
    read -r -a targets <<<"$FUZZ_TARGETS"
else
    mapfile -t targets < <(cargo_fuzz list --fuzz-dir "$FUZZ_DIR")
fi
[[ ${#targets[@]} -gt 0 ]] || die "no fuzz targets found"

# One target: fuzzes it, prints its report and writes its summary line to
# $LOG_DIR/<target>.result (ending in "ok" when nothing crashed). Runs in the background when FUZZ_JOBS > 1, so its report
# is printed in one piece at its end.
fuzz_one() {
    local t=$1 max_len log ts rc secs execs status art out
    # Inputs larger than libFuzzer's default 4096 bytes: http_head must reach the
    # 8 KiB head limit; render inputs are metric lists.
    case "$t" in
        http_head) max_len=12288 ;;
        render) max_len=8192 ;;
        *) max_len=4096 ;;
    esac
    log="$LOG_DIR/$t.log"
    out="== $t: fuzzing for ${SECS}s (log: $log)"$'\n'
    ts=$(date +%s)
    cargo_fuzz run --fuzz-dir "$FUZZ_DIR" --sanitizer "$SAN" "$t" -- \
        -max_total_time="$SECS" -max_len="$max_len" -timeout=30 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    secs=$(($(date +%s) - ts))
    execs=$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)
    [[ -n "$execs" ]] || execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -n 1)
    [[ -n "$execs" ]] || execs="?"
    if [[ $rc -eq 0 ]]; then
        status="ok"
    else
        status="CRASH (exit $rc)"
        out+="   $t FAILED:"$'\n'
        out+="$(grep -E -m 1 -A 1 "panicked at" "$log" | sed 's/^/     /')"$'\n'
        out+="$(grep -E -m 2 "ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|^SUMMARY:" "$log" | sed 's/^/     /')"$'\n'
        art=$(grep -o -m 1 'Test unit written to [^ ]*' "$log" | sed 's/^Test unit written to //')
        if [[ -n "$art" ]]; then
            out+="     crashing input: $art"$'\n'
            out+="     reproduce: RUSTC_BOOTSTRAP=1 $CARGO_FUZZ fuzz run --fuzz-dir $FUZZ_DIR --sanitizer $SAN $t $art"$'\n'
        fi
    fi
    out+="$(printf '   %s: %s executions in %ss, %s' "$t" "$execs" "$secs" "$status")"
    echo "$out"
    printf '%-10s %12s executions  %4ss  %s\n' "$t" "$execs" "$secs" "$status" >"$LOG_DIR/$t.result"
}

# FUZZ_JOBS targets at a time (default 1); each fuzzes on one core for its FUZZ_SECONDS.
JOBS="${FUZZ_JOBS:-1}"
[[ "$JOBS" =~ ^[1-9][0-9]*$ ]] || die "FUZZ_JOBS must be a positive integer, got '$JOBS'"
for t in "${targets[@]}"; do
    rm -f "$LOG_DIR/$t.result"
    if [[ $JOBS -eq 1 ]]; then
        fuzz_one "$t"
        continue
    fi
    while [[ $(jobs -rp | wc -l) -ge $JOBS ]]; do
        wait -n
    done
    fuzz_one "$t" &
done
wait
# The verdict comes from each target's result file (a missing one is a failure too).
failed=()
summary=()
for t in "${targets[@]}"; do
    result=$(cat "$LOG_DIR/$t.result" 2>/dev/null) || result="$t: no result"
    summary+=("$result")
    [[ $result == *"  ok" ]] || failed+=("$t")
done

total=$(($(date +%s) - t0))
echo
echo "== summary (${SECS}s per target, $JOBS at a time, sanitizer $SAN; build ${t_build}s, total ${total}s)"
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
    echo "smoke.sh: crash in: ${failed[*]}" >&2
    exit 1
fi
