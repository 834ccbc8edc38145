#!/usr/bin/env bash
# Install the Debian packages that Vigil's tests and tools call as programs, when missing.
# Usage: scripts/system-packages.sh COMMAND=PACKAGE ...   (e.g. promtool=prometheus)
# As root: apt-get installs what is missing. Otherwise: one line naming the packages, exit 1.
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null 2>&1 || missing+=("${pair#*=}")
done
((${#missing[@]})) || exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
if [[ $(id -u) -ne 0 ]]; then
  echo "missing system packages: run 'sudo apt-get install ${missing[*]}' (Debian/Ubuntu), then retry" >&2
  exit 1
fi
echo "installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
