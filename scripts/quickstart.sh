#!/usr/bin/env bash
# Quick start: set everything up and run the main job.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hatchway version
