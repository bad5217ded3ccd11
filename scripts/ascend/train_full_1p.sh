#!/usr/bin/env bash
# Ascend ModelZoo accuracy run on one device: train_and_evaluate from configs/ascend_seed.flags,
# ending with the LFW-style verification of the final checkpoint, then the ModelZoo summary
# <output_path>/<CaseName>.log (CaseName <Network>_bs<BatchSize>_1p_acc). -h for the options;
# the work is done by ascend_1p.sh (shared with train_performance_1p.sh) and estimator_main.py.
set -euo pipefail
KIND=full
# shellcheck source=scripts/ascend/ascend_1p.sh
source "$(dirname "${BASH_SOURCE[0]}")/ascend_1p.sh"
ascend_1p_main "$@"
