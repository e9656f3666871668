#!/usr/bin/env bash
# Forge across four hosts on this machine (network namespaces joined by veth links; needs root, iproute2 and
# Debian's postgresql-15 binaries): host A PostgreSQL + Redis + simulator, B the Dagster webserver and daemon,
# C Forge's code server and `forge work`, D more `forge work`. Runs the SIGKILL and the partition scenario and
# writes benchmarks/results/multihost.json. Arguments go to `python -m benchmarks.multihost` (--help).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec .venv/bin/python -m benchmarks.multihost "$@"
