#!/bin/bash
# Daemons that cannot lock key memory say so: run under a memory-lock
# limit of 64 KiB without CAP_IPC_LOCK, nkpd and nkp-hostd each log one
# NKP-MLOCK-FAILED warning (once, however often they are asked) and
# `nkpctl status` / `nkp-hostctl status` (text and --json) show it. Run
# normally, they show nothing of the kind.
. "$(dirname "$0")/lib.sh"
it_begin
command -v prlimit >/dev/null || it_skip "prlimit (util-linux) is not installed"
REAL_NKPD=$NKPD
REAL_HOSTD=$NKP_HOSTD

step "normal daemons: memory locked, no warning"
setup_cluster alpha
ok ctl --json status; json 'd["memory_locked"]'; assert_eq "nkpctl status: memory locked" true "$J"
ok hostctl alpha --json status; json 'd["memory_locked"]'
assert_eq "nkp-hostctl status: memory locked" true "$J"
ok hostctl alpha status; assert_not_contains "nkp-hostctl status" "$OUT" "cannot be locked"
stop_host alpha
stop_service
for f in "$T/log/svc.log" "$T/log/host-alpha.log"; do
	assert_not_contains "$f" "$(cat "$f")" "NKP-MLOCK-FAILED"
done
mv "$T/log/svc.log" "$T/log/svc-normal.log"
mv "$T/log/host-alpha.log" "$T/log/host-alpha-normal.log"

# AddressSanitizer intercepts mlock and makes it succeed whatever the
# limit: the failure cannot be provoked in such a build.
if grep -qa __asan_init "$REAL_NKPD"; then
	it_skip "an AddressSanitizer build: its mlock always succeeds"
fi

step "under a 64 KiB memory-lock limit without CAP_IPC_LOCK: one warning, shown in status"
# limited REAL: a wrapper that execs REAL (same pid) under the limit.
limited() {
	local w drop=""
	w=$T/limited-$(basename "$1")
	[ "$(id -u)" = 0 ] && drop="setpriv --bounding-set=-ipc_lock --inh-caps=-ipc_lock"
	printf '#!/bin/sh\nexec prlimit --memlock=65536:65536 %s "%s" "$@"\n' "$drop" "$1" >"$w"
	chmod +x "$w"
	J=$w
}
limited "$REAL_NKPD"; NKPD=$J
limited "$REAL_HOSTD"; NKP_HOSTD=$J
start_service
start_host alpha
wait_in_sync
for _ in 1 2 3; do
	ok ctl --json status
	ok hostctl alpha --json status
done
ok ctl --json status; json 'd["memory_locked"]'; assert_eq "nkpctl status --json" false "$J"
ok ctl status; assert_contains "nkpctl status" "$OUT" "cannot be locked"
ok hostctl alpha --json status; json 'd["memory_locked"]'; assert_eq "nkp-hostctl status --json" false "$J"
ok hostctl alpha status; assert_contains "nkp-hostctl status" "$OUT" "cannot be locked"
for f in "$T/log/svc.log" "$T/log/host-alpha.log"; do
	n=$(grep -c "warning NKP-MLOCK-FAILED" "$f")
	assert_eq "NKP-MLOCK-FAILED warnings in $(basename "$f")" 1 "$n"
done
assert_contains "the warning says what to do" "$(cat "$T/log/svc.log")" "LimitMEMLOCK"
it_pass
