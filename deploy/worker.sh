#!/usr/bin/env bash
# A Celery worker host. Every host gets the same CLIPLABEL_* variables as the code location (CLIPLABEL_EXECUTOR=celery,
# CLIPLABEL_BROKER, CLIPLABEL_RESULTS_ROOT on the shared file system, CLIPLABEL_MODEL, CLIPLABEL_REDELIVER_S).
#
#   deploy/worker.sh gpu       a GPU host: the CLIP encoding steps, one at a time per GPU
#   deploy/worker.sh cpu       a CPU host: every light step (scoring, groups, exports, report, checks)
#   deploy/worker.sh lineage   exactly ONE host in the deployment (beside the daemon): the DuckDB writes
set -euo pipefail
role=${1:?usage: worker.sh gpu|cpu|lineage}
case "$role" in
    gpu)     queues=clip;    concurrency=${CONCURRENCY:-1} ;;   # one process per GPU: the model loads once per worker
    cpu)     queues=dagster; concurrency=${CONCURRENCY:-$(nproc)} ;;
    lineage) queues=lineage; concurrency=1 ;;                   # one writer, never more
    *) echo "unknown role $role: gpu, cpu or lineage" >&2; exit 2 ;;
esac
exec celery -A cliplabel_pipeline.defs.celery_app worker -Q "$queues" --concurrency "$concurrency" \
    -n "$role-%h" --loglevel INFO --without-gossip --without-mingle
