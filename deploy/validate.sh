#!/usr/bin/env bash
# Validates the monitoring files with real tools, installing them when missing:
#   promtool (Debian's prometheus package): the alert rules parse and their PromQL is valid
#     (check rules), the rules' unit tests pass (test rules), the scrape configs load
#     (check config);
#   tsc against Grafana's published schema (@grafana/schema, npm ci from the lock in
#     deploy/grafana/validate/): every dashboard in deploy/grafana/dashboards/ type-checks.
# Exits non-zero on the first failure. .ci/run runs it before the tests, which then also
# check that these tools reject broken inputs and that every metric the rules and the
# dashboard name is in the bridge's real /metrics (tests/integration/test_monitoring_files.py).
set -euo pipefail
cd "$(dirname "$0")/.."

apt_updated=
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    echo "validate: $* is missing and installing it needs root (apt-get install $*)" >&2
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

command -v promtool >/dev/null 2>&1 || apt_install prometheus
command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || apt_install nodejs npm

echo "== promtool $(promtool --version 2>&1 | head -1 | awk '{print $3}'): alert rules, their unit tests, scrape configs"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config deploy/prometheus/prometheus.yml
promtool check config deploy/prometheus/scrape-kubernetes.yml

echo "== Grafana dashboards against @grafana/schema (tsc --strict, node $(node --version))"
(
  cd deploy/grafana/validate
  npm ci --no-audit --no-fund --loglevel=error
  node check.mjs
)
