#!/usr/bin/env bash
# Installs the real peers the end-to-end tests run against (test/e2e). Idempotent: a tool that
# is already on PATH is left alone, and nothing is installed when nothing is missing.
# Used by test/e2e/global-setup.ts, by CI and by people: one install path for all of them.
#
# Debian/Ubuntu only (apt-get); installing needs root. Usage: scripts/install-test-deps.sh
set -euo pipefail

# command on PATH -> Debian package that provides it. Add peers here (docker-registry, containerd).
TOOLS=(
  "skopeo:skopeo"
)

missing_packages=()
for entry in "${TOOLS[@]}"; do
  tool="${entry%%:*}"
  package="${entry#*:}"
  if command -v "$tool" >/dev/null 2>&1; then
    echo "install-test-deps: $tool found at $(command -v "$tool")"
  else
    echo "install-test-deps: $tool not found; needs Debian package $package"
    missing_packages+=("$package")
  fi
done

if [ "${#missing_packages[@]}" -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "install-test-deps: cannot install ${missing_packages[*]}: not running as root." >&2
  echo "install-test-deps: run 'sudo $0' or 'sudo apt-get install -y ${missing_packages[*]}', then run the tests again." >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: cannot install ${missing_packages[*]}: apt-get not found (the tests expect Debian or Ubuntu)." >&2
  echo "install-test-deps: install ${missing_packages[*]} with your system's package manager, then run the tests again." >&2
  exit 1
fi

echo "install-test-deps: + apt-get update"
apt-get update
echo "install-test-deps: + DEBIAN_FRONTEND=noninteractive apt-get install -y ${missing_packages[*]}"
DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing_packages[@]}"

for entry in "${TOOLS[@]}"; do
  tool="${entry%%:*}"
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-test-deps: $tool is still missing after installing ${entry#*:}" >&2
    exit 1
  fi
done
echo "install-test-deps: installed ${missing_packages[*]}"
