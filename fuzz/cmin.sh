#!/usr/bin/env bash
# Minimises the committed corpus of one fuzz target: `cargo fuzz cmin`, except that every named
# entry is kept (the seeds and the `regress-*`/`l2_*` regression inputs: any file whose name is
# not the 40-hex-digit SHA-1 libFuzzer gives the inputs it finds). Of the SHA-1-named inputs in
# corpus/<target>/ and in the extra directories, only those that add coverage to the named
# entries stay (libFuzzer's -merge=1, the same merge cargo fuzz cmin runs).
#
#   ./cmin.sh <target> [more corpus directories...] [-libfuzzer_flag=value...]
#
# from anywhere (needs cargo-fuzz); directories are taken relative to fuzz/. With
# -use_counters=0, an input stays only if it reaches a new edge (not a new hit count of one).
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: ./cmin.sh <target> [more corpus directories...] [-libfuzzer_flag=value...]}
shift
dirs=() flags=()
for a in "$@"; do
  if [[ $a == -* ]]; then flags+=("$a"); else dirs+=("$a"); fi
done
dir=corpus/$target
[[ -d $dir ]] || { echo "no $dir" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/kept" "$tmp/found"
for f in "$dir"/*; do
  if [[ $(basename "$f") =~ ^[0-9a-f]{40}$ ]]; then
    cp "$f" "$tmp/found/"
  else
    cp "$f" "$tmp/kept/"
  fi
done
before=$(ls "$dir" | wc -l)
RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" "$tmp/kept" "$tmp/found" "${dirs[@]}" -- -merge=1 "${flags[@]}"
# Only now that the merge has succeeded: replace the SHA-1-named entries with the merge's.
find "$dir" -maxdepth 1 -type f -regextype posix-extended -regex '.*/[0-9a-f]{40}' -delete
for f in "$tmp/kept"/*; do
  [[ -e $dir/$(basename "$f") ]] || cp "$f" "$dir/"
done
echo "$dir: $before files before, $(ls "$dir" | wc -l) after ($(du -sh "$dir" | cut -f1))"
