#!/usr/bin/env bash
# Mount the ML container image cache volume at /var/lib/containerd before containerd starts.
#
# Runs from the GPU nodes' user data (cloud-init runs it before nodeadm starts containerd on
# AL2023). The volume is found by its stable identifier, not by /dev/xvdb (Nitro numbers NVMe
# devices in any order): the udev link /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<id>
# carries the EBS volume id (the NVMe serial). Of those links, the one EBS volume with nothing
# mounted from it is the cache volume (the root volume holds /; instance-store NVMe disks have
# another prefix). A restored snapshot keeps its filesystem; a blank volume (no snapshot
# published yet) is formatted. Any failure exits non-zero, and containerd is made to refuse to
# start without the mount, so a node without its cache never silently pulls onto the root disk.
#
# Environment (defaults are the node's real paths; tests point them at temporary ones):
#   CACHE_BY_ID_DIR            /dev/disk/by-id
#   CACHE_MOUNT_POINT          /var/lib/containerd
#   CACHE_SYSTEMD_DIR          /etc/systemd/system   (containerd drop-in goes here)
#   CACHE_FSTAB                /etc/fstab
#   CACHE_DEVICE_WAIT_SECONDS  120                   (EBS attachment can lag the boot)
#   CACHE_FS_LABEL             ml-cache              (label of a freshly formatted blank volume)
#   CACHE_MANAGE_SYSTEMD       auto                  (1/0: daemon-reload, stop an early containerd)
set -euo pipefail

BY_ID_DIR="${CACHE_BY_ID_DIR:-/dev/disk/by-id}"
MOUNT_POINT="${CACHE_MOUNT_POINT:-/var/lib/containerd}"
SYSTEMD_DIR="${CACHE_SYSTEMD_DIR:-/etc/systemd/system}"
FSTAB="${CACHE_FSTAB:-/etc/fstab}"
WAIT_SECONDS="${CACHE_DEVICE_WAIT_SECONDS:-120}"
FS_LABEL="${CACHE_FS_LABEL:-ml-cache}"
MANAGE_SYSTEMD="${CACHE_MANAGE_SYSTEMD:-auto}"
EBS_LINK_PREFIX="nvme-Amazon_Elastic_Block_Store_vol"

log() {
  echo "ml-container-cache: $*" >&2
}

fail() {
  log "FATAL: $*"
  # The serial console shows up in `aws ec2 get-console-output`.
  if [[ -w /dev/console ]]; then
    echo "ml-container-cache: FATAL: $*" >/dev/console 2>/dev/null || true
  fi
  exit 1
}

systemd_managed() {
  case "$MANAGE_SYSTEMD" in
    1) return 0 ;;
    0) return 1 ;;
    *) [[ -d /run/systemd/system ]] ;;
  esac
}

# containerd must not start without the cache mounted: a drop-in makes its start fail.
guard_containerd() {
  local dropin_dir="$SYSTEMD_DIR/containerd.service.d"
  mkdir -p "$dropin_dir"
  cat >"$dropin_dir/10-ml-container-cache.conf" <<UNIT
[Unit]
RequiresMountsFor=$MOUNT_POINT

[Service]
ExecStartPre=/usr/bin/mountpoint -q $MOUNT_POINT
UNIT
  if systemd_managed; then
    systemctl daemon-reload
    if systemctl is-active --quiet containerd; then
      log "containerd is already running: stopping it before mounting its root"
      systemctl stop containerd
    fi
  fi
}

# A device is in use when it, or a partition of it, has a mounted filesystem (the root disk).
device_in_use() {
  local device="$1"
  [[ -n "$(lsblk --noheadings --output MOUNTPOINT "$device" 2>/dev/null | tr -d '[:space:]')" ]]
}

# Print the one unused EBS volume behind the by-id links; status 2 when there are several.
find_cache_device() {
  local link device
  local -A seen=()
  local -a candidates=()
  for link in "$BY_ID_DIR/$EBS_LINK_PREFIX"*; do
    [[ -e "$link" ]] || continue
    [[ "$link" == *-part* ]] && continue
    device="$(readlink -f "$link")"
    [[ -b "$device" ]] || continue
    [[ -n "${seen[$device]:-}" ]] && continue
    seen[$device]=1
    device_in_use "$device" && continue
    candidates+=("$link")
  done
  if ((${#candidates[@]} > 1)); then
    log "several unused EBS volumes: ${candidates[*]}"
    return 2
  fi
  ((${#candidates[@]} == 1)) || return 1
  echo "${candidates[0]}"
}

wait_for_cache_device() {
  local deadline=$((SECONDS + WAIT_SECONDS)) link status
  while true; do
    status=0
    link="$(find_cache_device)" || status=$?
    if ((status == 0)); then
      echo "$link"
      return 0
    fi
    ((status == 2)) && fail "cannot tell which EBS volume is the cache volume"
    ((SECONDS >= deadline)) && fail "no unused EBS volume under $BY_ID_DIR after ${WAIT_SECONDS}s"
    sleep 2
  done
}

prepare_filesystem() {
  local device="$1" fstype
  fstype="$(blkid --probe --output value --match-tag TYPE "$device" 2>/dev/null || true)"
  case "$fstype" in
    xfs | ext4)
      echo "$fstype"
      ;;
    "")
      log "$device is blank (no snapshot published yet): formatting it as XFS"
      mkfs.xfs -q -L "$FS_LABEL" "$device" >&2 || fail "mkfs.xfs $device failed"
      echo xfs
      ;;
    *)
      fail "$device holds a $fstype filesystem, expected xfs or ext4"
      ;;
  esac
}

mount_cache() {
  local device="$1" fstype="$2" options uuid
  options="defaults,noatime"
  [[ "$fstype" == xfs ]] && options+=",nouuid"
  mkdir -p "$MOUNT_POINT"
  mount -t "$fstype" -o "$options" "$device" "$MOUNT_POINT" || fail "mount $device on $MOUNT_POINT failed"
  mountpoint -q "$MOUNT_POINT" || fail "$MOUNT_POINT is not a mount point after mounting"
  # The volume may be larger than the snapshot it was restored from.
  if [[ "$fstype" == xfs ]]; then
    xfs_growfs -d "$MOUNT_POINT" >/dev/null || log "xfs_growfs failed (continuing at the snapshot's size)"
  else
    resize2fs "$device" >/dev/null 2>&1 || log "resize2fs failed (continuing at the snapshot's size)"
  fi
  uuid="$(blkid --probe --output value --match-tag UUID "$device")"
  if ! grep -q " $MOUNT_POINT " "$FSTAB" 2>/dev/null; then
    echo "UUID=$uuid $MOUNT_POINT $fstype $options,x-systemd.before=containerd.service 0 2" >>"$FSTAB"
  fi
}

main() {
  guard_containerd
  if mountpoint -q "$MOUNT_POINT"; then
    log "$MOUNT_POINT is already a mount point: nothing to do"
    return 0
  fi
  local link device fstype
  link="$(wait_for_cache_device)"
  device="$(readlink -f "$link")"
  fstype="$(prepare_filesystem "$device")"
  mount_cache "$device" "$fstype"
  log "mounted ${link##*/} ($device, $fstype) on $MOUNT_POINT: $(df -h --output=used,size "$MOUNT_POINT" | tail -n 1)"
}

main "$@"
