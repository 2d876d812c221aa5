#!/usr/bin/env bash
# Regenerates the Swift code for the farm's wire contract.
#
#   Scripts/gen_protos.sh            regenerate Sources/DPProtocol/dpfarm/v1/farm.pb.swift
#   Scripts/gen_protos.sh --check    regenerate into a temp dir; exit 1 if it differs from the committed file
#
# protoc-gen-swift is built from swift-protobuf at the exact version Package.swift pins (1.39.0),
# cloned into a scratch folder (DP_PROTOGEN_DIR, default .build-protogen/ at the repo root, ignored by git)
# and reused on later runs. protoc is Debian's (package protobuf-compiler). The SwiftPM build plugin is
# deliberately not used: the generated file is committed and reviewed like any other source.
set -euo pipefail

SWIFT_PROTOBUF_VERSION="1.39.0"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PROTO_ROOT="$ROOT/Protos"
PROTOS=("dpfarm/v1/farm.proto")
OUT_DIR="$ROOT/Sources/DPProtocol"
WORK="${DP_PROTOGEN_DIR:-$ROOT/.build-protogen}"

mode="write"
case "${1:-}" in
  "") ;;
  --check) mode="check" ;;
  -h|--help) sed -n 2,9p "${BASH_SOURCE[0]}"; exit 0 ;;
  *) echo "gen_protos.sh: unknown argument '$1' (expected nothing or --check)" >&2; exit 2 ;;
esac

command -v protoc >/dev/null || { echo "gen_protos.sh: protoc not found (apt-get install protobuf-compiler)" >&2; exit 1; }

# 1. protoc-gen-swift at the pinned version.
SRC="$WORK/swift-protobuf-$SWIFT_PROTOBUF_VERSION"
PLUGIN="$SRC/.build/release/protoc-gen-swift"
if [[ ! -x "$PLUGIN" ]]; then
  mkdir -p "$WORK"
  if [[ ! -d "$SRC/.git" ]]; then
    rm -rf "$SRC.tmp"
    git -c advice.detachedHead=false clone --quiet --branch "$SWIFT_PROTOBUF_VERSION" \
      https://github.com/apple/swift-protobuf "$SRC.tmp"
    mv "$SRC.tmp" "$SRC"
  fi
  echo "gen_protos.sh: building protoc-gen-swift $SWIFT_PROTOBUF_VERSION in $SRC" >&2
  (cd "$SRC" && swift build -c release --product protoc-gen-swift >&2)
fi
got="$("$PLUGIN" --version 2>/dev/null || true)"
if [[ "$got" != *"$SWIFT_PROTOBUF_VERSION"* ]]; then
  echo "gen_protos.sh: $PLUGIN reports '$got', expected version $SWIFT_PROTOBUF_VERSION" >&2
  exit 1
fi

# 2. Generate into a temp dir (both modes), then install or compare.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
protoc --plugin=protoc-gen-swift="$PLUGIN" \
  --proto_path="$PROTO_ROOT" \
  --swift_opt=Visibility=Public \
  --swift_opt=FileNaming=PathToUnderscores \
  --swift_out="$TMP" \
  "${PROTOS[@]/#/$PROTO_ROOT/}"

status=0
for proto in "${PROTOS[@]}"; do
  rel="${proto%.proto}.pb.swift"                 # dpfarm/v1/farm.pb.swift
  gen="$TMP/${rel//\//_}"                        # PathToUnderscores output name
  dest="$OUT_DIR/$rel"
  [[ -f "$gen" ]] || { echo "gen_protos.sh: protoc wrote no $gen" >&2; exit 1; }
  if [[ "$mode" == "check" ]]; then
    if ! diff -q "$gen" "$dest" >/dev/null 2>&1; then
      echo "gen_protos.sh --check: $dest is stale or missing; run Scripts/gen_protos.sh and commit" >&2
      diff -u "$dest" "$gen" | head -40 >&2 || true
      status=1
    fi
  else
    mkdir -p "$(dirname "$dest")"
    cp "$gen" "$dest.tmp" && mv "$dest.tmp" "$dest"
    echo "wrote ${dest#$ROOT/}"
  fi
done
[[ "$mode" == "check" && $status -eq 0 ]] && echo "gen_protos.sh --check: generated code is up to date"
exit $status
