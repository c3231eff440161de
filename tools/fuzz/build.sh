#!/usr/bin/env bash
# Builds the libFuzzer targets (tools/fuzz/targets/*.swift) with AddressSanitizer into
# .build-fuzz/: each is the library's sources compiled with one target file, by swiftc
# directly (SwiftPM has no fuzzer products). Usage: tools/fuzz/build.sh [TARGET...]
#
# Targets: safetensors (header reader), negpatch (.negpatch reader and decoder), hdf5 (HDF5
# patch reader; built only when Sources/NegPatch/Formats/HDF5 exists). Library files that
# import Crypto (signatures) take no untrusted parsing input and are left out, so the
# fuzz builds need no package dependencies.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=.build-fuzz
mkdir -p "$out"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors negpatch)
  [ -d Sources/NegPatch/Formats/HDF5 ] && targets+=(hdf5)
fi

mapfile -t library < <(find Sources/NegPatch -name '*.swift' | sort | xargs grep -L '^import Crypto' )
hdf5_cflags=$(pkg-config --cflags-only-I hdf5)
hdf5_libs=$(pkg-config --libs hdf5)

for target in "${targets[@]}"; do
  source=tools/fuzz/targets/$target.swift
  [ -f "$source" ] || { echo "build.sh: no target '$target' ($source)" >&2; exit 2; }
  if [ "$target" = hdf5 ] && [ ! -d Sources/NegPatch/Formats/HDF5 ]; then
    echo "build.sh: skipping hdf5: the HDF5 format is not in this tree" >&2
    continue
  fi
  echo "build.sh: building $out/$target" >&2
  # -O keeps executions fast; assertions and bounds checks stay on (not -Ounchecked).
  swiftc -O -g -use-ld=lld -sanitize=fuzzer,address -parse-as-library -module-name NegPatchFuzz \
    -I Sources/CZstd -I Sources/CHDF5 \
    $(for f in $hdf5_cflags; do printf -- '-Xcc %s ' "$f"; done) \
    "${library[@]}" tools/fuzz/targets/FuzzInput.swift "$source" \
    -lzstd $hdf5_libs \
    -o "$out/$target"
done
