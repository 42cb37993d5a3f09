#!/usr/bin/env bash
# Installs the real peers the end-to-end tests run against (test/e2e), and openssl, the second
# reader of the timestamps and certificates test/support/sigstore-pki.ts makes. Idempotent: a tool that
# is already on PATH is left alone, and nothing is installed when nothing is missing.
# Used by test/e2e/global-setup.ts, by CI and by people: one install path for all of them.
#
# The tests start their own instances of the daemons (test/e2e/support/upstream-registry.ts,
# test/e2e/support/containerd.ts) on free loopback ports with their own temporary directories,
# so the distribution's services are neither wanted nor started: the install runs under a
# policy-rc.d that forbids service starts, and under systemd the units it installed are disabled.
#
# Debian/Ubuntu only (apt-get); installing needs root. Usage: scripts/install-test-deps.sh
set -euo pipefail

# command on PATH -> Debian package that provides it.
TOOLS=(
  "skopeo:skopeo"
  "docker-registry:docker-registry"
  "containerd:containerd"
  "ctr:containerd"
  "wrk:wrk"
  "openssl:openssl"
)
# Debian packages whose systemd units must not run once installed.
SERVICES=(
  "docker-registry:docker-registry.service"
  "containerd:containerd.service"
)

missing_packages=()
found_tools=()
for entry in "${TOOLS[@]}"; do
  tool="${entry%%:*}"
  package="${entry#*:}"
  if command -v "$tool" >/dev/null 2>&1; then
    found_tools+=("$tool")
  else
    echo "install-test-deps: $tool not found; needs Debian package $package"
    if [[ " ${missing_packages[*]} " != *" $package "* ]]; then missing_packages+=("$package"); fi
  fi
done

if [ "${#missing_packages[@]}" -eq 0 ]; then
  echo "install-test-deps: all present (${found_tools[*]})"
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

# invoke-rc.d asks /usr/sbin/policy-rc.d before starting a service; exit 101 means "forbidden"
# (Debian policy, section 9.3.3). Only a file we created is removed again.
POLICY=/usr/sbin/policy-rc.d
if [ ! -e "$POLICY" ]; then
  printf '#!/bin/sh\n# scripts/install-test-deps.sh: no service starts while it installs.\nexit 101\n' >"$POLICY"
  chmod 755 "$POLICY"
  trap 'rm -f "$POLICY"' EXIT
fi

# Another install (the S3 peer's global setup, a second test run) may hold dpkg's lock: wait for it.
APT=(apt-get -o DPkg::Lock::Timeout=600)
echo "install-test-deps: + apt-get update"
"${APT[@]}" update
echo "install-test-deps: + DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing_packages[*]}"
DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y --no-install-recommends "${missing_packages[@]}"

# Under systemd the packages also enable their units for the next boot: disable (and stop, in
# case something started them anyway) the ones this run installed, and no others.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
  for entry in "${SERVICES[@]}"; do
    package="${entry%%:*}"
    unit="${entry#*:}"
    if [[ " ${missing_packages[*]} " == *" $package "* ]]; then
      echo "install-test-deps: + systemctl disable --now $unit"
      systemctl disable --now "$unit" || echo "install-test-deps: could not disable $unit (ignored)" >&2
    fi
  done
fi

for entry in "${TOOLS[@]}"; do
  tool="${entry%%:*}"
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-test-deps: $tool is still missing after installing ${entry#*:}" >&2
    exit 1
  fi
done
echo "install-test-deps: installed ${missing_packages[*]}"
