#!/usr/bin/env bash
# build_cache.sh - pre-pull container images into containerd on the data volume, then quiesce it.
#
# Runs on the builder instance through SSM Run Command (EKS-optimized AL2023 AMI) and in the
# local cloud. The spec is DATA, never shell text:
#   - SSM: env var SSM_spec = base64 of the JSON spec (document parameter, interpolationType ENV_VAR)
#   - local testing: path of a JSON spec file as $1
# Spec: {"action": "build"|"quiesce", "images": ["host/repo:tag@sha256:…"], "platform": "linux/amd64",
#        "volume_id": "vol-…", "parallel": 3 (image unpacks at once; default: the vCPUs),
#        "registry_credentials": {"<host>": {"source": "ecr"|"secretsmanager"|"ssm_secure_parameter"|…}},
#        "registry_endpoints": {"<host>": "http(s)://mirror[:port]"}}
#   defined by build_spec.schema.json, checked by build_cache_helpers.py (both beside this script)
#   before the volume is touched.
# stdout: exactly one JSON line (the report). Logs: stderr, terse (SSM keeps 8,000 chars), and progress
# lines while it pulls (build_cache_helpers.py progress_line: read live from CloudWatch Logs by Airflow).
# Exit status: 0 only when every image is pulled, verified and the volume is unmounted.
# Pulled images go to namespace k8s.io, are labelled io.cri-containerd.image=managed and
# io.cri-containerd.pinned=pinned (kubelet GC keeps them) under every name a pod may use: the pinned
# ref as given, repo@digest (the name CRI looks a digest-pinned pod image up by) and repo:tag.
# The builder's architecture must match the platform (`ctr images check` reports unpacking for the
# host platform).
# Incremental: a volume restored from the last cache keeps what the set still uses; names not in the
# set go (old versions of requested repositories only after the pull, so shared layers are not pulled
# again), GC runs synchronously and freed blocks are trimmed. The report's "volume" says what happened.
#
# Environment (defaults are the AWS ones):
#   ML_CACHE_DEVICE_DIR=/dev/disk/by-id        data device: nvme-Amazon_Elastic_Block_Store_<volid>
#   ML_CACHE_DEVICE_WAIT_SECONDS=60
#   ML_CACHE_CONTAINERD_ROOT=/var/lib/containerd   (the data volume is mounted here)
#   ML_CACHE_CONTAINERD_STATE=/run/containerd
#   ML_CACHE_CONTAINERD_SOCKET=/run/containerd/containerd.sock
#   ML_CACHE_CONTAINERD_CONFIG=/etc/containerd/config.toml
#   ML_CACHE_CONTAINERD_SERVICE=systemd | process   (process: our own child, stopped by PID)
#   ML_CACHE_CONTAINERD_PIDFILE=/run/ml-cache-containerd.pid   (process mode; read by quiesce)
#   ML_CACHE_PLAIN_HTTP_REGISTRIES=""          space-separated host:port list pulled with --plain-http
#                                              (a host with a registry_endpoints entry uses that instead)
#   ML_CACHE_ECR_TOKEN_MAX_AGE_SECONDS=21600   an ECR token older than this is fetched again before a pull
#   ML_CACHE_WORK_DIR                          temp files (default: mktemp -d, removed at exit)
#   ML_CACHE_PULL_ATTEMPTS=4  ML_CACHE_PULL_BACKOFF_SECONDS=2   bounded retries, exponential backoff
#   ML_CACHE_QUIESCE_FSCK=1                    quiesce runs `xfs_repair -n` on the device
#   ML_CACHE_TRACE                             non-empty: `set -x` (local debugging only; verbose)
#
# Credentials (registry_credentials, per exact host; a host not listed, or "anonymous", pulls
# without): fetched just in time by build_cache_secrets.py, before the volume is touched (a failure
# names the host and the source, never the value), into one 0600 file per host (user:password)
# in the work dir, removed at exit:
#   ecr                   aws ecr get-login-password --region <the host's region>, user AWS. The
#                         token lasts 12 h (https://docs.aws.amazon.com/AmazonECR/latest/userguide/registry_auth.html):
#                         it is fetched again before any pull attempt once older than
#                         ML_CACHE_ECR_TOKEN_MAX_AGE_SECONDS (6 h), so long builds never pull with a stale one.
#   secretsmanager        aws secretsmanager get-secret-value (region of the ARN): SecretString JSON
#                         {"username", "password"}, parsed in Python, never echoed.
#   ssm_secure_parameter  aws ssm get-parameter --with-decryption: "user:password".
# The password is typed into ctr's password prompt through a pseudo-terminal (ctr 1.6 only takes a
# password from argv or from a terminal; hosts.toml headers cannot answer bearer-token challenges):
# it never appears on a command line, in the environment of ctr, or in the logs.
# Endpoints (registry_endpoints): <work>/hosts.d/<host>/hosts.toml with server = <url> and a
# [host."<url>"] entry (pull, resolve), passed as `ctr images pull --hosts-dir`: the image keeps its
# name (e.g. <account>.dkr.ecr.<region>.amazonaws.com/repo:tag@sha256:…) while the bytes come from
# the endpoint, over plain HTTP for an http:// URL; --user's credentials go to the endpoint.
# Measured with ctr 1.6.20: a hosts.toml with `server` alone is ignored (ctr went to https://<host>);
# the [host."<url>"] entry is what routes the pull, `server` the same URL keeps the fallback there.
# ctr does not honour Retry-After on 429; the retries below use exponential backoff instead.
# Pull phase (pull_all; the containerd version picks the path, build_cache_helpers.py pull_plan):
# build_cache_prefetch.py fetches every blob of the set from the registries into the content store
# (all blobs at once, large ones in Range parts over several connections, same endpoints and
# credentials as ctr; sizes and digests checked, each blob written beside the store on the volume and
# renamed into it, then registered by `ctr content ingest`), announcing each image as
# soon as its blobs are in and its layers applied: build_cache_apply.py untars each layer as soon as
# its blob is in (pigz | tar, `unpack` at once, diff IDs checked) into the overlayfs snapshot containerd
# would make, committed in chain order; its `ctr images pull` then finds everything and only records it.
# A layer it cannot apply exactly is left to containerd, with the layers above it.
# An image the prefetch could not fetch is pulled by ctr alone (a warning, never a failure); the
# retries and checks below are the same either way.
#   ML_CACHE_PREFETCH=auto | fetch | off         fetch: containerd applies every layer; off: the plain `ctr images pull`
#   ML_CACHE_APPLY_MIN_BYTES=67108864            an image's layers are applied ahead of ctr from this size
#   ML_CACHE_PREFETCH_CHUNK_BYTES=16777216       Range part size of a large blob
set -euo pipefail
if [[ -n "${ML_CACHE_TRACE:-}" ]]; then set -x; fi
umask 077
export LC_ALL=C

# Everything but the final report goes to stderr: keep the original stdout on fd 3.
exec 3>&1 1>&2

readonly SCHEMA=1
readonly NAMESPACE=k8s.io
DEVICE_DIR=${ML_CACHE_DEVICE_DIR:-/dev/disk/by-id}
DEVICE_WAIT=${ML_CACHE_DEVICE_WAIT_SECONDS:-60}
CD_ROOT=${ML_CACHE_CONTAINERD_ROOT:-/var/lib/containerd}
CD_STATE=${ML_CACHE_CONTAINERD_STATE:-/run/containerd}
CD_SOCKET=${ML_CACHE_CONTAINERD_SOCKET:-/run/containerd/containerd.sock}
CD_CONFIG=${ML_CACHE_CONTAINERD_CONFIG:-/etc/containerd/config.toml}
CD_SERVICE=${ML_CACHE_CONTAINERD_SERVICE:-systemd}
CD_PIDFILE=${ML_CACHE_CONTAINERD_PIDFILE:-/run/ml-cache-containerd.pid}
PLAIN_HTTP=${ML_CACHE_PLAIN_HTTP_REGISTRIES:-}
ECR_TOKEN_MAX_AGE=${ML_CACHE_ECR_TOKEN_MAX_AGE_SECONDS:-21600}
PULL_ATTEMPTS=${ML_CACHE_PULL_ATTEMPTS:-4}
PULL_BACKOFF=${ML_CACHE_PULL_BACKOFF_SECONDS:-2}
QUIESCE_FSCK=${ML_CACHE_QUIESCE_FSCK:-1}

HERE="$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")"
HELPERS="$HERE/build_cache_helpers.py"
SECRETS="$HERE/build_cache_secrets.py"
PREFETCH="$HERE/build_cache_prefetch.py"
PREFETCH_MODE=${ML_CACHE_PREFETCH:-auto}

CD_PID=""            # containerd child we started (process mode)
CD_STARTED_BY_US=0   # we started containerd (either mode) and must stop it
MOUNTED_BY_US=0      # we mounted the data device and must unmount it
WORK_DIR_OWNED=0
DEVICE=""
RESTORED=0 REASON="" FS_BEFORE=0 FS_AFTER=0 # what prepare_volume found and did (the report's "volume")
MAIN_PID=$BASHPID
PREFETCH_PID=""      # build_cache_prefetch.py while it runs
CD_VERSION=unknown PREFETCH_ON=0 CONNECTIONS=0 UNPACK=1 EARLY_UNPACK=0 PULL_PATH="plain ctr pull" # plan_pull
RUNNING=() STARTED=() # pull jobs running, images whose pull started (pull_all)

log() { printf '%s build_cache: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { printf '%s' "${EPOCHREALTIME}"; }
helpers() { python3 "$HELPERS" "$@"; } # the Python half, beside this script: JSON in and out
secrets() { python3 "$SECRETS" "$@"; } # the part of it that handles registry credentials
prefetcher() { python3 "$PREFETCH" "$@"; } # the part that fetches blobs ahead of ctr

[[ -r "$HELPERS" && -r "$SECRETS" && -r "$PREFETCH" && -r "$HERE/build_cache_apply.py" ]] \
  || die "helper module missing beside $0"
case "$PREFETCH_MODE" in auto | fetch | off) ;; *) die "ML_CACHE_PREFETCH must be auto, fetch or off" ;; esac
case "$CD_SERVICE" in systemd | process) ;; *) die "ML_CACHE_CONTAINERD_SERVICE must be systemd or process" ;; esac
[[ "$PULL_ATTEMPTS" =~ ^[1-9][0-9]?$ ]] || die "ML_CACHE_PULL_ATTEMPTS must be 1..99"
[[ "$PULL_BACKOFF" =~ ^[0-9]{1,3}$ ]] || die "ML_CACHE_PULL_BACKOFF_SECONDS must be 0..999"
[[ "$ECR_TOKEN_MAX_AGE" =~ ^[0-9]{1,5}$ ]] || die "ML_CACHE_ECR_TOKEN_MAX_AGE_SECONDS must be 0..99999"

if [[ -n "${ML_CACHE_WORK_DIR:-}" ]]; then
  WORK=$ML_CACHE_WORK_DIR
  mkdir -p "$WORK"
else
  WORK=$(mktemp -d /tmp/ml-cache-build.XXXXXX)
  WORK_DIR_OWNED=1
fi

# --- containerd and volume handling ---------------------------------------------------------

containerd_answers() { [[ -S "$CD_SOCKET" ]] && ctr --connect-timeout 2s -a "$CD_SOCKET" version >/dev/null 2>&1; }

start_containerd() {
  if [[ "$CD_SERVICE" == systemd ]]; then
    systemctl start containerd
  else
    mkdir -p "$CD_STATE" "$(dirname "$CD_SOCKET")"
    containerd --config "$CD_CONFIG" >>"$WORK/containerd.log" 2>&1 &
    CD_PID=$!
    printf '%s\n' "$CD_PID" >"$CD_PIDFILE"
  fi
  CD_STARTED_BY_US=1
  local waited=0
  until containerd_answers; do
    if [[ -n "$CD_PID" ]] && ! kill -0 "$CD_PID" 2>/dev/null; then
      tail -n 5 "$WORK/containerd.log" >&2 || true
      die "containerd exited at start (config $CD_CONFIG)"
    fi
    ((waited++ < 300)) || die "containerd did not answer on $CD_SOCKET within 30 s"
    sleep 0.1
  done
}

pid_alive() { # a zombie (exited, not yet reaped by its parent) counts as gone
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ "${stat:0:1}" != Z ]]
}

stop_pid() { # stop_pid PID: SIGTERM, wait up to 20 s, then SIGKILL (that PID only)
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 200; i++)); do
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    log "containerd $pid ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

stop_containerd() {
  if [[ "$CD_SERVICE" == systemd ]]; then
    systemctl stop containerd
  elif [[ -n "$CD_PID" ]]; then
    stop_pid "$CD_PID"
    CD_PID=""
    rm -f "$CD_PIDFILE"
  fi
  CD_STARTED_BY_US=0
}

# Stops a containerd left by an earlier run of this script (process mode), found by its pidfile.
stop_leftover_containerd() {
  [[ "$CD_SERVICE" == process && -s "$CD_PIDFILE" ]] || return 0
  local pid
  pid=$(<"$CD_PIDFILE")
  if [[ "$pid" =~ ^[0-9]+$ ]] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "containerd --config $CD_CONFIG"; then
    log "stopping containerd $pid left by an earlier run"
    stop_pid "$pid"
  fi
  rm -f "$CD_PIDFILE"
}

wait_for_device() {
  local link="$DEVICE_DIR/nvme-Amazon_Elastic_Block_Store_${VOLUME_ID//-/}" waited=0
  until [[ -e "$link" ]]; do
    ((waited++ < DEVICE_WAIT)) || die "data volume $VOLUME_ID not attached: $link missing after ${DEVICE_WAIT} s"
    sleep 1
  done
  DEVICE=$(readlink -f "$link")
  [[ -b "$DEVICE" ]] || die "$link -> $DEVICE is not a block device"
}

device_fs_type() { # prints TYPE (empty when no filesystem); fails on a partition table
  local probe
  probe=$(blkid -p -o export "$DEVICE" 2>/dev/null) || true
  if grep -q '^PTTYPE=' <<<"$probe"; then
    die "refusing to use $DEVICE for $VOLUME_ID: it holds a partition table"
  fi
  sed -n 's/^TYPE=//p' <<<"$probe"
}

unmount_tree() { # unmount_tree MOUNTPOINT: nested mounts first
  local target
  while IFS= read -r target; do
    [[ -n "$target" ]] && umount "$target"
  done < <(findmnt -R -n -l -o TARGET --mountpoint "$1" 2>/dev/null | sort -r)
}

fs_bytes() { df -B1 --output="$1" "$CD_ROOT" | tail -n 1 | tr -d ' '; } # fs_bytes size|used

# An XFS found on the device is a restored volume (from the published snapshot, or this run's earlier
# attempt): it is kept when it mounts and `xfs_repair -n` finds nothing, then grown to the device.
prepare_volume() {
  local fstype
  fstype=$(device_fs_type)
  if [[ -n "$fstype" && "$fstype" != xfs ]]; then
    die "refusing to format $DEVICE for $VOLUME_ID: it already holds a $fstype filesystem"
  fi
  local targets
  targets=$(findmnt -n -l -o TARGET --source "$DEVICE" 2>/dev/null || true)
  if [[ -n "$targets" && "$targets" == "$(realpath -m "$CD_ROOT")" ]]; then
    log "$DEVICE is still mounted at $CD_ROOT by an interrupted run; remounting"
    unmount_tree "$CD_ROOT"
  elif [[ -n "$targets" ]]; then
    die "$DEVICE ($VOLUME_ID) is already mounted elsewhere: $(tr '\n' ' ' <<<"$targets")"
  fi
  if mountpoint -q "$CD_ROOT"; then
    die "$CD_ROOT is already a mount point of another device"
  fi
  mkdir -p "$CD_ROOT"
  if [[ -z "$fstype" ]]; then
    log "formatting $DEVICE ($VOLUME_ID) with XFS"
    mkfs.xfs -q -L ml-cache "$DEVICE"
  elif ! mount -t xfs "$DEVICE" "$CD_ROOT" 2>"$WORK/fs.log"; then # a mount replays a dirty log
    REASON="mount failed"
  elif ! umount "$CD_ROOT" || ! xfs_repair -n "$DEVICE" >"$WORK/fs.log" 2>&1; then
    REASON="xfs_repair -n found problems"
  else
    RESTORED=1
  fi
  if [[ -n "$REASON" ]]; then
    REASON+=": $({ grep -m 1 -iE 'bad|corrupt|invalid|error|needs' "$WORK/fs.log" || tail -n 1 "$WORK/fs.log"; } | cut -c1-200)"
    log "restored filesystem unusable ($REASON); reformatting"
    mkfs.xfs -q -f -L ml-cache "$DEVICE"
  fi
  mount -t xfs -o noatime "$DEVICE" "$CD_ROOT"
  MOUNTED_BY_US=1
  FS_BEFORE=$(fs_bytes size)
  xfs_growfs -d "$CD_ROOT" >/dev/null
  FS_AFTER=$(fs_bytes size)
}

release_volume() {
  sync
  unmount_tree "$CD_ROOT"
  if findmnt -n --source "$DEVICE" >/dev/null 2>&1; then
    die "$DEVICE still mounted after unmount"
  fi
  MOUNTED_BY_US=0
}

on_exit() {
  local rc=$?
  set +e
  # Subshells (command substitutions, pull jobs) may run this trap too: only the main shell cleans up.
  [[ "$BASHPID" == "$MAIN_PID" ]] || exit "$rc"
  if ((rc != 0)); then
    log "FAILED (exit $rc); cleaning up"
    local job
    for job in $(jobs -p) $PREFETCH_PID; do
      [[ "$job" == "$CD_PID" ]] || kill "$job" 2>/dev/null
    done
  fi
  ((CD_STARTED_BY_US)) && stop_containerd
  if ((MOUNTED_BY_US)); then
    sync
    unmount_tree "$CD_ROOT" || log "could not unmount $CD_ROOT"
  fi
  rm -f "$WORK"/secret.* 2>/dev/null
  ((WORK_DIR_OWNED)) && rm -rf "$WORK"
  exit "$rc"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- pulls ---------------------------------------------------------------------------------

fetch_credentials() { # one 0600 file per registry host: $WORK/secret.<host> holds user:password
  local entry host source region reference what
  for entry in "${CREDENTIALS[@]}"; do
    read -r host source region reference <<<"$entry"
    what=$source
    [[ "$reference" == - ]] || what+=" $reference"
    if [[ "$region" == - && -z "${AWS_REGION:-}${AWS_DEFAULT_REGION:-}" ]]; then
      AWS_DEFAULT_REGION=$(helpers imds-region 2>/dev/null) || die "no AWS region: set AWS_REGION (IMDS did not answer)"
      export AWS_DEFAULT_REGION
    fi
    log "fetching credentials for $host from $what"
    secrets fetch "$host" "$source" "$region" "$reference" "$WORK/secret.$host" || die "no credentials for $host"
  done
}

write_hosts_dir() { # containerd hosts.toml per endpoint (URLs are checked by the schema: no quotes)
  local entry host url
  for entry in "${ENDPOINTS[@]}"; do
    read -r host url <<<"$entry"
    mkdir -p "$WORK/hosts.d/$host"
    printf 'server = "%s"\n\n[host."%s"]\n  capabilities = ["pull", "resolve"]\n' "$url" "$url" \
      >"$WORK/hosts.d/$host/hosts.toml"
    ENDPOINT_HOSTS+=" $host "
  done
}

refresh_ecr_token() { # refresh_ecr_token HOST: a new token when the one held is older than the limit
  local entry host source region reference
  for entry in "${CREDENTIALS[@]}"; do
    read -r host source region reference <<<"$entry"
    [[ "$host" == "$1" && "$source" == ecr ]] || continue
    secrets fetch "$host" "$source" "$region" "$reference" "$WORK/secret.$host" "$ECR_TOKEN_MAX_AGE"
  done
}

pull_one() { # pull_one INDEX REF: bounded retries; writes pull.INDEX.rc
  local index=$1 ref=$2 host attempt tried=0 delay=$PULL_BACKOFF rc=1 last_lines refreshed
  local -a args=(ctr -a "$CD_SOCKET" -n "$NAMESPACE" images pull --platform "$PLATFORM")
  local logfile="$WORK/pull.$index.log"
  host=${ref%%/*}
  if [[ "$ENDPOINT_HOSTS" == *" $host "* ]]; then
    args+=(--hosts-dir "$WORK/hosts.d")
  elif [[ " $PLAIN_HTTP " == *" $host "* ]]; then
    args+=(--plain-http)
  fi
  for ((attempt = 1; attempt <= PULL_ATTEMPTS; attempt++)); do
    printf '=== attempt %s\n' "$attempt" >>"$logfile"
    tried=$attempt
    if ! refreshed=$(refresh_ecr_token "$host" 2>&1); then
      printf 'ctr: %s\n' "$refreshed" >>"$logfile" # names the host and the source, never the token
      rc=1
      break
    fi
    if [[ -f "$WORK/secret.$host" ]]; then
      secrets pty-pull "$WORK/secret.$host" "$logfile" "${args[@]}" "$ref" && rc=0 || rc=$?
    else
      "${args[@]}" "$ref" >>"$logfile" 2>&1 && rc=0 || rc=$?
    fi
    ((rc == 0)) && break
    last_lines=$(tail -n 3 "$logfile")
    if grep -qiE 'not found|no match for platform|unauthorized|denied|invalid reference|no space left' <<<"$last_lines"; then
      break
    fi
    if ((attempt < PULL_ATTEMPTS)); then
      sleep "$delay"
      delay=$((delay * 2))
    fi
  done
  printf '%s %s\n' "$rc" "$tried" >"$WORK/pull.$index.rc"
  helpers progress pulled "$ref" "$rc" || true
}

plan_pull() { # the pull path for the running containerd (build_cache_helpers.py pull_plan)
  local key value
  while IFS='=' read -r key value; do
    case "$key" in
      containerd) CD_VERSION=$value ;;
      prefetch) PREFETCH_ON=$value ;;
      connections) CONNECTIONS=$value ;;
      unpack) UNPACK=$value ;;
      early_unpack) EARLY_UNPACK=$value ;;
      path) PULL_PATH=$value ;;
    esac
  done < <(helpers pull-plan "$CD_SOCKET" "$PARALLEL" "$PREFETCH_MODE" || true)
  [[ "$PREFETCH_ON" == 1 && "$CONNECTIONS" =~ ^[1-9][0-9]*$ ]] || PREFETCH_ON=0
  [[ "$UNPACK" =~ ^[1-9][0-9]*$ ]] || UNPACK=$((PARALLEL > 0 ? PARALLEL : 3))
  [[ "$EARLY_UNPACK" =~ ^[0-9]+$ ]] || EARLY_UNPACK=0
  log "pull: containerd $CD_VERSION, $PULL_PATH, $UNPACK unpack(s) at once"
}

start_pull() { # start_pull INDEX: once fewer than UNPACK pull jobs run
  local pid
  while ((${#RUNNING[@]} >= UNPACK)); do
    wait -n "${RUNNING[@]}" || true
    local -a still=()
    for pid in "${RUNNING[@]}"; do
      kill -0 "$pid" 2>/dev/null && still+=("$pid")
    done
    RUNNING=("${still[@]}")
  done
  pull_one "$1" "${IMAGES[$1]}" &
  RUNNING+=("$!")
  STARTED[$1]=1
}

pull_all() { # each image's pull starts when the prefetch announces it (any order), the rest after it
  local index status detail fd pid prefetched=0
  RUNNING=() STARTED=()
  if ((PREFETCH_ON)); then
    exec {fd}< <(ML_CACHE_PROGRESS_FD=4 exec python3 "$PREFETCH" prefetch "$CD_SOCKET" "$NAMESPACE" "$PLATFORM" \
      "$WORK/spec.lines" "$WORK" "$CONNECTIONS" "$EARLY_UNPACK" "$CD_ROOT" 4>&2 2>>"$WORK/prefetch.log")
    PREFETCH_PID=$!
    while read -r -u "$fd" index status detail; do
      [[ "$index" =~ ^[0-9]+$ && -n "${IMAGES[$index]:-}" && -z "${STARTED[$index]:-}" ]] || continue
      if [[ "$status" == ok ]]; then
        prefetched=$((prefetched + 1))
      else
        log "prefetch of ${IMAGES[$index]} failed, ctr pulls it alone: ${detail:0:300}"
      fi
      start_pull "$index"
    done
    exec {fd}<&-
    wait "$PREFETCH_PID" 2>/dev/null || true
    PREFETCH_PID=""
    log "$(tail -n 1 "$WORK/prefetch.log" 2>/dev/null | cut -c1-300); $prefetched of ${#IMAGES[@]} image(s) prefetched"
    grep -m 3 '^apply' "$WORK/prefetch.log" | cut -c1-300 >&2 || true
  fi
  for index in "${!IMAGES[@]}"; do
    [[ -n "${STARTED[$index]:-}" ]] || start_pull "$index"
  done
  for pid in "${RUNNING[@]}"; do
    wait "$pid" || true
  done
  if ((PREFETCH_ON)); then
    # the anchor, and any snapshot no image recorded, must not reach the snapshot
    prefetcher release "$CD_SOCKET" "$NAMESPACE" "$CD_ROOT" || prefetcher release "$CD_SOCKET" "$NAMESPACE" "$CD_ROOT" \
      || die "could not remove the prefetch's transient images (ml-cache.invalid/...)"
  fi
  local failed=0 rc attempts reason
  for index in "${!IMAGES[@]}"; do
    read -r rc attempts <"$WORK/pull.$index.rc" || rc=1
    if ((rc != 0)); then
      failed=$((failed + 1))
      ((failed <= 10)) || continue # stderr is cut at 8,000 chars by SSM: name the first ten
      reason=$({ grep -E '^ctr: ' "$WORK/pull.$index.log" || true; } | tail -n 1 | cut -c1-500)
      log "pull failed: ${IMAGES[$index]} (platform $PLATFORM, ${attempts:-?} attempt(s)): ${reason:-see ctr output}"
    fi
  done
  ((failed == 0)) || die "$failed of ${#IMAGES[@]} image(s) failed to pull for $PLATFORM"
}

label_all() { # every name a pod may use (see image_names), each pinned against kubelet GC
  local ref names name
  while IFS=$'\t' read -r ref _ _ _ names; do
    for name in $names; do
      if [[ "$name" != "$ref" ]]; then
        ctr -a "$CD_SOCKET" -n "$NAMESPACE" images tag --force "$ref" "$name" >/dev/null
      fi
      ctr -a "$CD_SOCKET" -n "$NAMESPACE" images label "$name" \
        io.cri-containerd.image=managed io.cri-containerd.pinned=pinned >/dev/null
    done
  done <"$WORK/verified.tsv"
}

# --- actions -------------------------------------------------------------------------------

action_build() {
  local t0 t1 t2 t3 t4 fs_used trimmed=1
  t0=$(now)
  ((${#CREDENTIALS[@]} == 0)) || fetch_credentials
  write_hosts_dir
  wait_for_device
  log "build: ${#IMAGES[@]} image(s) for $PLATFORM onto $VOLUME_ID ($DEVICE)"
  if [[ "$CD_SERVICE" == systemd ]]; then
    systemctl stop containerd
  else
    stop_leftover_containerd
  fi
  prepare_volume
  start_containerd
  plan_pull
  printf '%s\n' "${IMAGES[@]}" >"$WORK/refs.txt"
  if ((PREFETCH_ON)); then # an interrupted run's transient images (else prune removes them: not in the set)
    prefetcher release "$CD_SOCKET" "$NAMESPACE" "$CD_ROOT" || log "could not remove an earlier run's transient images"
  fi
  # images no one asked for go before the pull, old versions of requested ones after it (shared layers)
  helpers prune before "$CD_SOCKET" "$NAMESPACE" "$CD_ROOT" "$WORK/prune.json" "$WORK/refs.txt"
  t1=$(now)
  pull_all
  t2=$(now)
  helpers verify "$CD_SOCKET" "$NAMESPACE" "$PLATFORM" "$WORK/refs.txt" >"$WORK/verified.tsv" \
    || die "verification failed for $PLATFORM (see above)"
  label_all
  helpers prune after "$CD_SOCKET" "$NAMESPACE" "$CD_ROOT" "$WORK/prune.json"
  t3=$(now)
  stop_containerd
  fstrim "$CD_ROOT" || { trimmed=0 && log "fstrim failed: freed blocks stay in the snapshot"; }
  sync
  fs_used=$(fs_bytes used)
  release_volume
  t4=$(now)
  log "build: ok, $(wc -l <"$WORK/verified.tsv") image(s), volume quiesced"
  helpers report build "schema=$SCHEMA" "platform=$PLATFORM" "volume_id=$VOLUME_ID" "fs_used=$fs_used" \
    "restored=$RESTORED" "reason=$REASON" "fs_before=$FS_BEFORE" "fs_after=$FS_AFTER" "trimmed=$trimmed" \
    "prune=$WORK/prune.json" "started=$t0" "prepared=$t1" "pulled=$t2" "verified=$t3" "quiesced=$t4" <"$WORK/verified.tsv" >&3
}

action_quiesce() {
  local fstype xfs_repair_result=skipped target unmounted=""
  local -a targets
  wait_for_device
  if [[ "$CD_SERVICE" == systemd ]]; then
    systemctl stop containerd
  else
    stop_leftover_containerd
  fi
  if containerd_answers; then
    die "a containerd still answers on $CD_SOCKET; not safe to snapshot $VOLUME_ID"
  fi
  sync
  mapfile -t targets < <(findmnt -n -l -o TARGET --source "$DEVICE" 2>/dev/null || true)
  for target in "${targets[@]}"; do
    [[ -n "$target" ]] || continue
    unmount_tree "$target"
    unmounted+="$target "
  done
  if findmnt -n --source "$DEVICE" >/dev/null 2>&1; then
    die "$DEVICE ($VOLUME_ID) is still mounted"
  fi
  fstype=$(device_fs_type)
  if [[ "$fstype" == xfs && "$QUIESCE_FSCK" == 1 ]]; then
    xfs_repair -n "$DEVICE" >"$WORK/xfs_repair.log" 2>&1 \
      || { tail -n 5 "$WORK/xfs_repair.log" >&2; die "xfs_repair -n found problems on $DEVICE ($VOLUME_ID)"; }
    xfs_repair_result=ok
  fi
  log "quiesce: $VOLUME_ID ($DEVICE) unmounted${unmounted:+ from $unmounted}, containerd stopped"
  helpers report quiesce "schema=$SCHEMA" "volume_id=$VOLUME_ID" "device=$DEVICE" \
    "filesystem=${fstype:-none}" "xfs_repair=$xfs_repair_result" "unmounted=$unmounted" >&3
}

# --- main ----------------------------------------------------------------------------------

if (($# >= 1)); then
  SPEC_FILE=$1
  [[ -r "$SPEC_FILE" ]] || die "spec file not readable: $SPEC_FILE"
elif [[ -n "${SSM_spec:-}" ]]; then
  SPEC_FILE="$WORK/spec.json"
  printf '%s' "$SSM_spec" | base64 -d >"$SPEC_FILE" 2>/dev/null || die "SSM_spec is not valid base64"
else
  die "no spec: set SSM_spec (base64 JSON) or pass a spec file path"
fi

ACTION="" VOLUME_ID="" PLATFORM="" PARALLEL=0
IMAGES=() CREDENTIALS=() ENDPOINTS=() ENDPOINT_HOSTS=""
helpers parse-spec "$SPEC_FILE" >"$WORK/spec.lines" || die "spec rejected"
while IFS='=' read -r key value; do
  case "$key" in
    action) ACTION=$value ;;
    volume_id) VOLUME_ID=$value ;;
    platform) PLATFORM=$value ;;
    parallel) PARALLEL=$value ;;
    image) IMAGES+=("$value") ;;
    credential) CREDENTIALS+=("$value") ;;
    endpoint) ENDPOINTS+=("$value") ;;
    *) die "internal: unexpected spec line $key" ;;
  esac
done <"$WORK/spec.lines"

case "$ACTION" in
  build) action_build ;;
  quiesce) action_quiesce ;;
esac
