#!/usr/bin/env bash
# System packages beyond pip: bubblewrap (bwrap), the OS sandbox that runs
# model-generated code (ussafety/evaluate/sandbox.py, docs/security.md).
#
# Idempotent; called by `make setup` and CI. It installs bubblewrap with apt-get
# when bwrap is missing and we are root, then checks that bwrap can create the
# sandbox's namespaces. It never fails the build: without a working bwrap the
# sandbox itself refuses to run generated code and says why (opt-out:
# USSAFETY_ALLOW_UNISOLATED_CODE=1), so a warning here is enough.
set -u

say() { echo "system-deps: $*"; }
warn() { echo "system-deps: WARNING: $*" >&2; }

if command -v bwrap >/dev/null 2>&1; then
    say "bubblewrap already installed ($(bwrap --version 2>/dev/null || echo 'version unknown'))"
elif [ "$(id -u)" != 0 ]; then
    warn "bubblewrap (bwrap) is missing and we are not root; install it with"
    warn "  sudo apt-get install -y bubblewrap   (Debian/Ubuntu; dnf/pacman/apk: bubblewrap)"
    exit 0
elif ! command -v apt-get >/dev/null 2>&1; then
    warn "bubblewrap (bwrap) is missing and there is no apt-get; install bubblewrap >= 0.8"
    exit 0
else
    say "installing bubblewrap with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends bubblewrap >/dev/null 2>&1; then
        say "apt-get install failed; refreshing the package lists and retrying"
        if ! { apt-get update -q >/dev/null && apt-get install -y --no-install-recommends bubblewrap >/dev/null; }; then
            warn "apt-get could not install bubblewrap; generated code will be refused"
            exit 0
        fi
    fi
    say "installed $(bwrap --version 2>/dev/null)"
fi

# The sandbox needs --size (a size-limited tmpfs: the total disk cap), bubblewrap >= 0.8.
if ! bwrap --help 2>&1 | grep -q -- '--size'; then
    warn "$(bwrap --version 2>/dev/null) is too old (no --size); bubblewrap >= 0.8 is needed"
    exit 0
fi

# A smoke test with the namespaces the sandbox uses: root runs bwrap without a user
# namespace; other users need unprivileged user namespaces.
if [ "$(id -u)" = 0 ]; then
    smoke=(bwrap --unshare-ipc --unshare-pid --unshare-net --unshare-uts --ro-bind / / --proc /proc --dev /dev true)
else
    smoke=(bwrap --unshare-all --unshare-user --disable-userns --ro-bind / / --proc /proc --dev /dev true)
fi
if error=$("${smoke[@]}" 2>&1); then
    say "bwrap smoke test passed"
    exit 0
fi
warn "bwrap cannot create the sandbox here: ${error}"
restrict=/proc/sys/kernel/apparmor_restrict_unprivileged_userns
if [ -r "$restrict" ] && [ "$(cat "$restrict")" = 1 ]; then
    if [ "$(id -u)" = 0 ] && [ "${CI:-}" = true ]; then
        # throw-away CI machine (Ubuntu >= 23.10 restricts user namespaces by AppArmor)
        say "CI: allowing unprivileged user namespaces (sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
        echo 0 > "$restrict"
        if "${smoke[@]}" >/dev/null 2>&1; then say "bwrap smoke test passed"; else warn "still failing"; fi
    else
        warn "AppArmor restricts unprivileged user namespaces; to allow them run"
        warn "  sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0"
    fi
fi
exit 0
