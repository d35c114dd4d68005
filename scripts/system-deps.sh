#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real (browsers, servers), if any is missing.
# Idempotent: when every command below is present it does nothing. Needs root or sudo (apt-get).
set -euo pipefail
cd "$(dirname "$0")"
missing=()
while read -r package command; do
    [[ -z "$package" || "$package" == \#* ]] && continue
    command -v "$command" >/dev/null 2>&1 || missing+=("$package")
done < system-packages.txt
[[ ${#missing[@]} -eq 0 ]] && exit 0
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
echo "installing Debian packages: ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
