#!/usr/bin/env bash
# Runs fuzz targets built by tools/fuzz/build.sh.
#
#   tools/fuzz/run.sh TARGET SECONDS [libFuzzer options...]   one target, for SECONDS
#   tools/fuzz/run.sh --ci [SECONDS]                            build, then every target
#                                                               for SECONDS (default 20)
#
# The working corpus of each target lives in .build-fuzz/corpus/TARGET and grows from run
# to run; it is seeded from tools/fuzz/seeds/TARGET and the golden files in formats/.
# A crash, a sanitizer report, an out-of-memory (an allocation over 2 GiB) or a timeout
# (10 s for one input) stops the run with a non-zero status; the input is saved in
# .build-fuzz/crashes/TARGET/ and should become a regression test in Tests/NegPatchTests
# (and a seed file). Every run appends "date target seconds executions status" to
# .build-fuzz/runs.tsv; tools/fuzz/run.sh --totals prints the sums per target. A dictionary
# of the format's keywords (tools/fuzz/dictionaries/TARGET.dict) is used where there is one.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.build-fuzz
[ "${FUZZ_SANITIZERS:-fuzzer,address}" = fuzzer,address ] || out=.build-fuzz-plain

if [ "${1:-}" = --totals ]; then
  [ -f "$out/runs.tsv" ] || { echo "no runs yet"; exit 0; }
  awk -F'\t' '{ s[$2] += $3; e[$2] += $4; n[$2]++; if ($5 != 0) c[$2]++ }
    END { for (t in s) printf "%-12s %3d runs %7d s %12d executions %d failed\n", t, n[t], s[t], e[t], c[t] + 0 }' "$out/runs.tsv" | sort
  exit 0
fi

if [ "${1:-}" = --ci ]; then
  seconds=${2:-20}
  tools/fuzz/build.sh
  status=0
  for target in safetensors negpatch hdf5; do
    [ -x "$out/$target" ] || continue
    [ "$target" = hdf5 ] && [ ! -d Sources/NegPatch/Formats/HDF5 ] && continue
    "$0" "$target" "$seconds" || status=1
  done
  exit $status
fi

target=${1:?usage: tools/fuzz/run.sh TARGET SECONDS [options] | --ci [SECONDS] | --totals}
seconds=${2:?usage: tools/fuzz/run.sh TARGET SECONDS [options]}
shift 2
binary=$out/$target
[ -x "$binary" ] || tools/fuzz/build.sh "$target"

corpus=$out/corpus/$target
crashes=$out/crashes/$target
mkdir -p "$corpus" "$crashes"
seeds=()
seed_folder=tools/fuzz/seeds/${target%-sealed}
[ -d "$seed_folder" ] && seeds+=("$seed_folder")
case $target in
  safetensors) golden=(formats/golden/*.safetensors) ;;
  negpatch) golden=(formats/golden/*.negpatch) ;;
  hdf5|hdf5-sealed) golden=(formats/golden/*.h5) ;;
  *) golden=() ;;
esac
for f in "${golden[@]}"; do [ -f "$f" ] && cp -n "$f" "$corpus/" ; done

dict=()
[ -f "tools/fuzz/dictionaries/${target%-sealed}.dict" ] && dict=(-dict="tools/fuzz/dictionaries/${target%-sealed}.dict")

log=$(mktemp)
set +e
"$binary" "$corpus" "${seeds[@]}" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
  -malloc_limit_mb=2048 -artifact_prefix="$crashes/" -print_final_stats=1 "${dict[@]}" "$@" 2>"$log"
status=$?
set -e
runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)
printf '%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$seconds" "${runs:-0}" "$status" >> "$out/runs.tsv"
if [ $status -ne 0 ]; then
  grep -E 'ERROR|Fatal|fatal|SUMMARY|Test unit written|==[0-9]+==' "$log" | head -40 >&2
  echo "fuzz $target: FAILED after ${runs:-0} executions (status $status); input in $crashes/, log $log" >&2
  exit $status
fi
rm -f "$log"
echo "fuzz $target: ${runs:-0} executions in $seconds s, no crash"
