#!/usr/bin/env bash
# Do the install instructions resolve? `pip install --dry-run` (nothing is installed) against PyPI as
# a user sees it (no local wheel folders or machine constraints), in a fresh venv, for: each extra
# alone, the four together (notebooks,gpu,judges,dist), the GPU set (constraints-gpu.txt) and the
# pip section of environment.yml. Prints one line per check and exits 1 if any does not resolve.
# Needs network to PyPI. pip reads each wheel's metadata by HTTP range requests (fast-deps): without
# it, pip downloads every wheel in full (about 3 GB a check: torch and its CUDA wheels), which took
# 12 minutes and 8 CPU-minutes here instead of 3.5 minutes and 2 CPU-minutes (checks run 4 at a time).
#   bash .ci/install-checks.sh            # PYTHON=python3.11 to choose the interpreter
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A copy of the checkout's files (tracked and untracked-not-ignored, as they are now): pip prepares
# the package's metadata in place, and a parallel `make setup` installs from the checkout.
mkdir "$tmp/src"
git ls-files -z --cached --others --exclude-standard \
  | "$PYTHON" -c 'import os, sys; sys.stdout.write("".join(p + "\0" for p in sys.stdin.read().split("\0") if p and os.path.lexists(p)))' \
  | tar --null -T - -cf - | tar -xf - -C "$tmp/src" || exit 1
cd "$tmp/src"
"$PYTHON" -m venv "$tmp/venv" || exit 1
PIP=("$tmp/venv/bin/python" -m pip)
export PIP_CONFIG_FILE=/dev/null PIP_DISABLE_PIP_VERSION_CHECK=1
unset PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT
"${PIP[@]}" install -q "pip==26.3" || exit 1  # a current pip, as a user installing today has

# The pip lines of environment.yml (paths in them are relative to the repository root).
mapfile -t ENV_PIP < <("$PYTHON" - <<'PY'
import re
lines = open("environment.yml", encoding="utf-8").read().splitlines()
start = next(i for i, l in enumerate(lines) if re.match(r"^\s*- pip:\s*$", l))
for line in lines[start + 1:]:
    m = re.match(r"^\s+- (.+)$", line)
    if not m:
        break
    print(m.group(1).strip())
PY
)
[ ${#ENV_PIP[@]} -gt 0 ] || { echo "environment.yml: no pip section"; exit 1; }
env_args=()
for item in "${ENV_PIP[@]}"; do read -r -a words <<<"$item"; env_args+=("${words[@]}"); done

check() {  # name, pip arguments...
  local name=$1 log="$tmp/$1.log" t0=$SECONDS
  shift
  if "${PIP[@]}" install --dry-run --ignore-installed --use-feature=fast-deps --quiet "$@" >"$log" 2>&1; then
    echo "ok    $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $name ($((SECONDS - t0)) s): pip install --dry-run $*"
    grep -v "^WARNING" "$log" | tail -n 15 | sed 's/^/      /'
    return 1
  fi
}

names=(); pids=()
run() { check "$@" & pids+=($!); names+=("$1"); while [ "$(jobs -rp | wc -l)" -ge 4 ]; do sleep 1; done; }
for extra in notebooks gpu judges dist code dev; do run "extra-$extra" -e ".[$extra]"; done
run "extras-together" -e ".[notebooks,gpu,judges,dist]"
run "gpu-constraints" -c constraints-gpu.txt -e ".[notebooks,gpu,judges,dist]"
run "environment.yml" "${env_args[@]}"
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
echo "install checks: ${#names[@]} run in $SECONDS s, $([ $failed = 0 ] && echo 'all resolve' || echo 'some do NOT resolve')"
exit $failed
