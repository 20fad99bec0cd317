#!/usr/bin/env bash
# Amazon MWAA startup script for the ML container image cache (upload it as the environment's
# startup script). MWAA runs it on every Airflow component before Airflow starts; the variables it
# exports reach the scheduler, the workers and the triggerer. Only what the DAGs need is here.
#
# ml_cache finds its packaged config (plugins.zip: ml_cache/defaults/ml_container_cache.yaml) by
# itself; naming it here makes the choice visible and is the one line to change to read another
# file (for example one synced with the DAGs folder, editable without a new plugins.zip).
ML_CACHE_CONFIG="${AIRFLOW_HOME:-/usr/local/airflow}/plugins/ml_cache/defaults/ml_container_cache.yaml"
export ML_CACHE_CONFIG
if [ ! -f "$ML_CACHE_CONFIG" ]; then
  echo "ml-container-cache: $ML_CACHE_CONFIG is missing: upload the plugins.zip of the same bundle" >&2
fi
