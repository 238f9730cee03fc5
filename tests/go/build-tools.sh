#!/usr/bin/env bash
# Builds the pinned Go tools of tests/go/tools.txt into a cache outside the clone
# (${SIGSTEAD_GO_TOOLS:-~/.cache/sigstead/go-tools}/<name>-<version>/), and rebuilds a tool only
# when its line in tools.txt changes. A tool that cannot be built stops the run with go's own
# error: a consumer test that silently skips is a consumer nobody checks.
#
#   bash tests/go/build-tools.sh            # build what is missing or stale
#   bash tests/go/build-tools.sh cosign-v3  # just these
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${SIGSTEAD_GO_TOOLS:-$HOME/.cache/sigstead/go-tools}
mkdir -p "$cache"
command -v go >/dev/null || { echo "build-tools: no Go toolchain on PATH (Go 1.26 or later)" >&2; exit 1; }

# One build at a time across processes (two CI jobs, or a test run and a developer): the
# cache directory is renamed into place only when complete, and the lock keeps two builders
# from racing on the same tool.
exec 9>"$cache/.lock"
flock 9

# A tool's pin: its line, and for a patched tool the SHA-256 (12 hex digits) of its patch files,
# so that editing a patch rebuilds the tool as changing the line does. tests/gotools.py computes
# the same string.
pin_of() {
  local line=$1 word patches=()
  for word in $line; do
    case "$word" in *.patch) patches+=("$here/$word") ;; esac
  done
  if [ ${#patches[@]} -eq 0 ]; then
    printf '%s\n' "$line"
  else
    printf '%s %s\n' "$line" "$(cat "${patches[@]}" | sha256sum | cut -c1-12)"
  fi
}

build_one() {
  local line=$1 name module pkg version mode rest
  read -r name module pkg version mode rest <<<"$line"
  local dest="$cache/$name-$version" pin
  pin=$(pin_of "$line")
  if [ -f "$dest/pin" ] && [ "$(cat "$dest/pin")" = "$pin" ]; then
    return 0
  fi
  echo "== go tools: building $name $version ($mode; a cold build takes minutes)" >&2
  local work
  work=$(mktemp -d)
  local start=$SECONDS
  local bin
  bin=$(basename "$pkg")
  mkdir -p "$work/out"
  case "$mode" in
    install)
      GOBIN="$work/out" go install "$module/$pkg@$version"
      ;;
    module)
      local dir
      dir=$(cd "$work" && GOFLAGS=-mod=mod go mod download -json "$module@$version" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
      cp -r "$dir" "$work/src"
      chmod -R u+w "$work/src"
      local r
      for r in $rest; do
        case "$r" in
          *.patch) (cd "$work/src" && git apply -p1 "$here/$r") ;;
          *) (cd "$work/src" && go mod edit -replace "$r") ;;
        esac
      done
      # -mod=mod: a replace added above may need go.sum lines the release does not carry.
      (cd "$work/src" && GOFLAGS=-mod=mod go build -trimpath -o "$work/out/$bin" "./$pkg")
      ;;
    *)
      echo "build-tools: unknown mode $mode for $name" >&2
      exit 1
      ;;
  esac
  echo $((SECONDS - start)) >"$work/out/build-seconds"
  printf '%s\n' "$pin" >"$work/out/pin"
  rm -rf "$dest"
  mv "$work/out" "$dest"
  rm -rf "$work"
  echo "== go tools: $name $version built in $(cat "$dest/build-seconds")s" >&2
}

wanted=("$@")
while IFS= read -r line; do
  case "$line" in ''|'#'*) continue ;; esac
  name=${line%% *}
  if [ ${#wanted[@]} -gt 0 ] && [[ ! " ${wanted[*]} " =~ " $name " ]]; then
    continue
  fi
  build_one "$line"
done <"$here/tools.txt"
