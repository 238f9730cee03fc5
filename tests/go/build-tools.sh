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

build_one() {
  local line=$1 name module pkg version mode rest
  read -r name module pkg version mode rest <<<"$line"
  local dest="$cache/$name-$version"
  if [ -f "$dest/pin" ] && [ "$(cat "$dest/pin")" = "$line" ]; then
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
        (cd "$work/src" && go mod edit -replace "$r")
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
  printf '%s\n' "$line" >"$work/out/pin"
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
