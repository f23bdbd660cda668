#!/bin/bash
# nkpd's admin API under load and interruption, with the real Argon2id cost
# of backups (no --insecure-fast-backup in this test):
#   - 8 `provider create` and as many `status` / `host list` at once: every
#     call exits 0, every provider exists once, and the generation rose by
#     exactly 8 (no change lost or doubled);
#   - a backup and a restore at the real cost (Argon2id "moderate"): the
#     restored provider has the same id and versions;
#   - SIGTERM while a backup computes its Argon2id hash (seen by nkpd's
#     memory growing): nkpd exits 0; nkpctl either wrote a complete backup
#     that restores, or failed with one line and left no file; the state is
#     intact after a restart;
#   - a full disk under the event log (the fault shim fails every write of
#     events.jsonl): nkpd starts, and admin changes still succeed and persist.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require
export IT_SLOW_BACKUP=1

step "8 concurrent provider creates beside status and host list"
setup_cluster alpha
ok ctl --json status
json 'd["generation"]'
G0=$J
pids=()
for i in 1 2 3 4 5 6 7 8; do
	ctl provider create "p$i" >"$T/create-$i.out" 2>"$T/create-$i.err" &
	pids+=("$!")
	ctl --json status >"$T/status-$i.out" 2>&1 &
	pids+=("$!")
	ctl --json host list >"$T/hosts-$i.out" 2>&1 &
	pids+=("$!")
done
n=0
for p in "${pids[@]}"; do
	wait "$p" || fail "a concurrent nkpctl call failed (exit $?): $(cat "$T"/create-*.err)"
	n=$((n + 1))
done
assert_eq "concurrent calls that finished" 24 "$n"
for i in 1 2 3 4 5 6 7 8; do
	json 'd["generation"] > 0' "$(cat "$T/status-$i.out")"
	json 'isinstance(d, list)' "$(cat "$T/hosts-$i.out")"
done
ok ctl --json provider list
json '" ".join(sorted(p["name"] for p in d))'
assert_eq "providers after the concurrent creates" "p1 p2 p3 p4 p5 p6 p7 p8" "$J"
ok ctl --json status
json 'd["generation"]'
assert_eq "generation after 8 creates" $((G0 + 8)) "$J"

step "a backup and a restore at the real Argon2id cost"
ok ctl provider backup p1 --out "$T/p1.backup" --password-file "$T/password"
ok ctl --json provider show p1
json 'd["id"]'
P1_ID=$J
stop_service
OLD_SVC=$SVC_DIR
service_init "$T/svc2"
start_service
ok ctl provider restore "$T/p1.backup" --password-file "$T/password"
ok ctl --json provider show p1
json 'd["id"]'
assert_eq "restored provider's id" "$P1_ID" "$J"
json '[v["version"] for v in d["versions"]]'
assert_eq "restored versions" "[1]" "$J"
stop_service

step "SIGTERM while a backup computes its Argon2id hash"
SVC_DIR=$OLD_SVC
SVC_SOCK=$SVC_DIR/admin.sock
start_service
rss_kib() { sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$SVC_PID/status" 2>/dev/null; }
RSS0=$(rss_kib)
ctl provider backup p2 --out "$T/p2.backup" --password-file "$T/password" \
	>"$T/backup.out" 2>"$T/backup.err" &
BK=$!
IT_PIDS+=("$BK")
# Argon2id "moderate" takes 256 MiB: nkpd's RSS passing +128 MiB means the
# hash is being computed.
argon_running() { [ "$(rss_kib)" -gt $((RSS0 + 131072)) ]; }
wait_until 30 "nkpd to start hashing the backup password" argon_running
stop_service
wait "$BK"
BRC=$?
forget_pid "$BK"
if [ "$BRC" = 0 ]; then
	[ -s "$T/p2.backup" ] || fail "backup exited 0 but wrote no file"
	log "the backup finished before nkpd stopped"
else
	assert_eq "nkpctl's exit status when nkpd stops mid-backup" 1 "$BRC"
	J=$(grep -c . "$T/backup.err")
	assert_eq "lines on stderr" 1 "$J"
	[ ! -e "$T/p2.backup" ] || fail "an interrupted backup left $T/p2.backup"
	log "the backup failed with: $(cat "$T/backup.err")"
fi
start_service
ok ctl --json provider list
json '" ".join(sorted(p["name"] for p in d))'
assert_eq "providers after the interrupted backup" "p1 p2 p3 p4 p5 p6 p7 p8" "$J"
if [ "$BRC" = 0 ]; then
	stop_service
	service_init "$T/svc3"
	start_service
	ok ctl provider restore "$T/p2.backup" --password-file "$T/password"
fi
stop_service

step "a full disk under the event log: nkpd serves and persists changes"
SVC_DIR=$OLD_SVC
SVC_SOCK=$SVC_DIR/admin.sock
shim_arm svc "write enospc events.jsonl"
start_service_shim
ok ctl provider create full1
shim_wait_hit svc
stop_service
shim_clear svc
start_service
ok ctl --json provider list
json '"full1" in [p["name"] for p in d]'
assert_eq "a provider created while events could not be written" true "$J"
ok ctl provider create full2
ok ctl events
assert_contains "events once the disk has room" "$OUT" "full2"

it_pass
