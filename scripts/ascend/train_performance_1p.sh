#!/usr/bin/env bash
# Ascend ModelZoo performance run on one device: a short --mode=train (1000 steps by default,
# from step 0) from configs/ascend_seed.flags that measures examples/sec, then the ModelZoo
# summary <output_path>/<CaseName>.log (CaseName <Network>_bs<BatchSize>_1p_perf). -h for the
# options; the work is done by ascend_1p.sh (shared with train_full_1p.sh) and estimator_main.py.
set -euo pipefail
KIND=perf
# shellcheck source=scripts/ascend/ascend_1p.sh
source "$(dirname "${BASH_SOURCE[0]}")/ascend_1p.sh"
ascend_1p_main "$@"
