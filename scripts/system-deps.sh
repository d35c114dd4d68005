#!/usr/bin/env bash
# Installs the Debian packages the test suite runs for real (browsers, servers), if any is missing.
# Idempotent: when every command below is present it does nothing. Needs root or sudo (apt-get).
set -euo pipefail
cd "$(dirname "$0")"
missing=()
optional=()
while read -r package command kind; do
    [[ -z "$package" || "$package" == \#* ]] && continue
    command -v "$command" >/dev/null 2>&1 && continue
    if [[ "${kind:-}" == optional ]]; then optional+=("$package"); else missing+=("$package"); fi
done < system-packages.txt
[[ ${#missing[@]} -eq 0 && ${#optional[@]} -eq 0 ]] && exit 0
sudo=""
[[ $(id -u) -ne 0 ]] && sudo="sudo"
$sudo apt-get update -qq
for package in "${optional[@]}"; do
    if [[ -n "$(apt-cache policy "$package" 2>/dev/null | sed -n 's/^ *Candidate: //p' | grep -v '(none)')" ]]; then
        missing+=("$package")
    else
        echo "note: $package is not in this machine's apt sources; the tests that need it are skipped"
    fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
echo "installing Debian packages: ${missing[*]}"
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
