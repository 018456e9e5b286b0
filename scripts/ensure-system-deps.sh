#!/usr/bin/env bash
# Makes sure the system tools the tests use are installed: mosquitto (the broker the
# integration tests start), promtool and prometheus (Prometheus's checker and server, from
# Debian's prometheus), amtool (Alertmanager's checker, from prometheus-alertmanager) and
# docker-compose (validates the compose files; no Docker engine needed) and openssl (makes the
# security tests' CA and certificates).
# Installs them with apt when it can (root or passwordless sudo); otherwise stops and prints
# the one command to run.
set -euo pipefail

declare -A package_of=([mosquitto]=mosquitto [promtool]=prometheus [prometheus]=prometheus
    [amtool]=prometheus-alertmanager [docker-compose]=docker-compose [openssl]=openssl)
missing=()
for tool in "${!package_of[@]}"; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        case " ${missing[*]} " in
            *" ${package_of[$tool]} "*) ;;
            *) missing+=("${package_of[$tool]}") ;;
        esac
    fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

command="apt-get update && apt-get install -y --no-install-recommends ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
    echo "missing: ${missing[*]}; install them with your system's package manager" >&2
    exit 1
fi
if [ "$(id -u)" -eq 0 ]; then
    runner=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    runner=(sudo)
else
    echo "missing: ${missing[*]}. Run this, then make test again:" >&2
    echo "  sudo sh -c '$command'" >&2
    exit 1
fi
echo "installing ${missing[*]} with apt-get" >&2
"${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
"${runner[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
