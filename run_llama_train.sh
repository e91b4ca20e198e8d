#!/usr/bin/env bash
# Train with torchtitan through tinytitan. Same interface as torchtitan's run_train.sh:
#   NGPU=8 CONFIG_FILE=train_configs/llama3_tiny.toml ./run_llama_train.sh [--section.key value ...]
# Without a GPU it trains the debug model on 2 CPU processes. Multi-node: set NNODES,
# NODE_RANK, MASTER_ADDR, MASTER_PORT on every node (see util/slurm_multinode.sbatch).
set -euo pipefail
if [ -n "${CONFIG_FILE:-}" ] && [ -e "$CONFIG_FILE" ]; then
  CONFIG_FILE="$(cd "$(dirname "$CONFIG_FILE")" && pwd)/$(basename "$CONFIG_FILE")"
  export CONFIG_FILE
fi
cd "$(dirname "$0")"
_extras="" # training needs the package and its runtime dependencies only
source util/bootstrap.sh
exec "$PYTHON" -m tinytitan.launcher.launch "$@"
