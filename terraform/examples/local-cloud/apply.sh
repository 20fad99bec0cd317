#!/usr/bin/env bash
# Apply (or destroy) terraform/examples/local-cloud into a running local cloud and write the DAG config.
#
# Usage: apply.sh ENDPOINT_URL CONFIG_OUT        apply, then write `ml_cache_config` to CONFIG_OUT
#        apply.sh --destroy ENDPOINT_URL         destroy what an earlier apply created
# Environment:
#   TF_PLUGIN_DIR  provider mirror for an offline init (default /opt/tf-plugins; unset/empty dir = registry)
#   TF_DATA_DIR    where .terraform lives (default: .terraform next to this file, gitignored)
#   ML_CACHE_TF_STATE  state file (default terraform.tfstate next to this file, gitignored); keep it
#                  with the local cloud's home so a fresh local cloud starts from fresh state
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
plugin_dir="${TF_PLUGIN_DIR:-/opt/tf-plugins}"
state="${ML_CACHE_TF_STATE:-$here/terraform.tfstate}"

usage() {
  echo "usage: $0 ENDPOINT_URL CONFIG_OUT | $0 --destroy ENDPOINT_URL" >&2
  exit 2
}

init() {
  local args=(-input=false -no-color)
  if [[ -d "$plugin_dir" ]]; then
    args+=("-plugin-dir=$plugin_dir")
  fi
  terraform -chdir="$here" init "${args[@]}" >/dev/null
}

if [[ "${1:-}" == "--destroy" ]]; then
  [[ $# -eq 2 ]] || usage
  init
  terraform -chdir="$here" destroy -auto-approve -input=false -no-color -state="$state" -var "endpoint_url=$2"
  exit 0
fi

[[ $# -eq 2 ]] || usage
endpoint="$1"
config_out="$2"
command -v terraform >/dev/null || { echo "terraform is not installed" >&2; exit 3; }

init
started=$SECONDS
terraform -chdir="$here" apply -auto-approve -input=false -no-color -state="$state" -var "endpoint_url=$endpoint"
mkdir -p "$(dirname "$config_out")"
terraform -chdir="$here" output -state="$state" -raw ml_cache_config >"$config_out.tmp"
mv "$config_out.tmp" "$config_out"
echo "applied in $((SECONDS - started))s; DAG config written to $config_out (export ML_CACHE_CONFIG=$config_out)" >&2
