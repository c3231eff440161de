#!/usr/bin/env bash
# Builds the libFuzzer targets (tools/fuzz/targets/*.swift) with AddressSanitizer into
# .build-fuzz/, by swiftc directly (SwiftPM has no fuzzer products): the library's sources
# once into an instrumented static library, then each target against it.
# Usage: tools/fuzz/build.sh [TARGET...]
#
# FUZZ_SANITIZERS (default fuzzer,address) selects the sanitizers; `fuzzer` alone builds
# into .build-fuzz-plain/, where heap memory is the C library's own: bugs in uninstrumented
# C libraries (libhdf5) that depend on uninitialised heap contents show there and not under
# AddressSanitizer, whose allocator fills memory differently. run.sh takes the same variable.
#
# Targets: safetensors (header reader), negpatch (.negpatch reader and decoder), hdf5 (HDF5
# patch reader on files as they arrive), hdf5-sealed (the same behind a recomputed
# integrity block, so libhdf5 parses the mutations; not built by default, not run by CI).
# The HDF5 targets are built only when Sources/NegPatch/Formats/HDF5 exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
sanitizers=${FUZZ_SANITIZERS:-fuzzer,address}
out=.build-fuzz
[ "$sanitizers" = fuzzer,address ] || out=.build-fuzz-plain
mkdir -p "$out"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(safetensors negpatch)
  [ -d Sources/NegPatch/Formats/HDF5 ] && targets+=(hdf5)
fi

# Signing (swift-crypto) and the audit reports, which can call it, parse no untrusted
# input before a signature check but a fixed-form text file; leaving them out keeps the
# fuzz builds free of package dependencies.
mapfile -t library < <(find Sources/NegPatch -name '*.swift' -not -path '*/Signing/*' -not -path '*/Audit/*' | sort \
  | xargs grep -L '^import Crypto')
xcc=()
for flag in $(pkg-config --cflags-only-I hdf5); do xcc+=(-Xcc "$flag"); done
# -O keeps executions fast; bounds and overflow checks stay on (not -Ounchecked).
flags=(-O -g -sanitize="$sanitizers" -parse-as-library -I Sources/CZstd -I Sources/CHDF5 -I Sources/CLinux/include "${xcc[@]}")

# The library, rebuilt only when a source is newer than the archive.
archive=$out/libNegPatch.a
if [ ! -f "$archive" ] || [ -n "$(find Sources/NegPatch -name '*.swift' -newer "$archive" | head -1)" ]; then
  echo "build.sh: building the instrumented library" >&2
  rm -rf "$out/module" && mkdir -p "$out/module"
  swiftc "${flags[@]}" -module-name NegPatch -emit-library -static -emit-module \
    -emit-module-path "$out/module/NegPatch.swiftmodule" "${library[@]}" -o "$archive"
fi

# The C shim (Sources/CLinux: the SIGBUS guard of input mappings, the signal thread, the
# pthread loop), compiled with the same sanitizers (the fuzzer's coverage, not its main).
clinux=$out/clinux.o
if [ ! -f "$clinux" ] || [ Sources/CLinux/shim.c -nt "$clinux" ] || [ Sources/CLinux/include/CLinux.h -nt "$clinux" ]; then
  clang -O1 -g -fsanitize="${sanitizers/fuzzer/fuzzer-no-link}" -I Sources/CLinux/include -c Sources/CLinux/shim.c -o "$clinux"
fi

for target in "${targets[@]}"; do
  source=tools/fuzz/targets/$target.swift
  [ -f "$source" ] || { echo "build.sh: no target '$target' ($source)" >&2; exit 2; }
  extra=()
  case $target in
    negpatch) extra=(tools/fuzz/targets/PatchReading.swift) ;;
    hdf5*)
      if [ ! -d Sources/NegPatch/Formats/HDF5 ]; then
        echo "build.sh: skipping $target: the HDF5 format is not in this tree" >&2
        continue
      fi
      extra=(tools/fuzz/targets/PatchReading.swift) ;;
  esac
  echo "build.sh: building $out/$target" >&2
  swiftc "${flags[@]}" -use-ld=lld -I "$out/module" -module-name "Fuzz_${target//-/_}" \
    tools/fuzz/targets/FuzzInput.swift "${extra[@]}" "$source" "$archive" "$clinux" \
    -lzstd $(pkg-config --libs hdf5) -o "$out/$target"
done
