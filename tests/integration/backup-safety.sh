#!/bin/bash
# Backups an operator can rely on:
# - a production nkpd (built without -Dtest-hooks) neither knows nor
#   mentions --insecure-fast-backup;
# - `provider backup` marks the provider backed up only once nkpctl has
#   written the file and read it back: a file that cannot be written (no
#   such directory, a full disk) leaves the provider not backed up, exit 1;
# - restore refuses a backup whose Argon2id cost is below libsodium's
#   "interactive" limits unless --allow-weak is given.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-hard.sh"
it_begin
hard_require

step "the test-only backup switch exists only in a test-hooks build"
if grep -qa 'insecure-fast-backup' "$NKPD"; then
	HOOKS=1
else
	HOOKS=0
fi
assert_eq "nkpd built with test hooks knows --insecure-fast-backup" "${NKP_TEST_HOOKS:-$HOOKS}" "$HOOKS"
ok "$NKPD" run --help
if [ "$HOOKS" = 0 ]; then
	assert_not_contains "production nkpd --help" "$OUT" "insecure"
	expect_exit 2 "$NKPD" run --state-dir "$T/unused" --insecure-fast-backup
fi

setup_cluster alpha
backed_up() { provider_json "$1"; json 'd["backed_up"]'; }

step "a backup that cannot be written leaves the provider not backed up"
ok ctl provider create prod --default
expect_fail ctl provider backup prod --out "$T/nosuch/prod.backup" --password-file "$T/password"
assert_contains "backup to a missing directory: error" "$ERR" "not marked backed up"
backed_up prod; assert_eq "backed up after a failed write" false "$J"
ctl_shim() {
	# (A sanitizer build's nkpctl loads the ASan runtime after the shim.)
	LD_PRELOAD=$FAULTSHIM FAULTSHIM_CTL=$(shim_ctl ctl) \
		ASAN_OPTIONS=verify_asan_link_order=0${ASAN_OPTIONS:+:$ASAN_OPTIONS} \
		timeout -k 2 "$IT_CMD_TIMEOUT" "$NKPCTL" --socket "$SVC_SOCK" "$@"
}
shim_arm ctl "write enospc full.backup"
expect_fail ctl_shim provider backup prod --out "$T/full.backup" --password-file "$T/password"
assert_contains "backup to a full disk: error" "$ERR" "no space left"
shim_clear ctl
[ -e "$T/full.backup" ] && fail "a backup file was left on the full disk"
backed_up prod; assert_eq "backed up after a full disk" false "$J"
vm_create_refused() {
	expect_fail hostctl alpha vm create --keysafe "$T/vm/x1" --vm-uuid "$(vm_uuid x1)" \
		--vm-name x1
}
wait_in_sync
vm_create_refused

step "the normal backup: written, read back, confirmed; VM keys are made"
ok ctl provider backup prod --out "$T/prod.backup" --password-file "$T/password"
assert_contains "backup output" "$OUT" "backed up to"
backed_up prod; assert_eq "backed up after the backup" true "$J"
mode=$(stat -c %a "$T/prod.backup"); assert_eq "backup file mode" 600 "$mode"
event_count "$SVC_DIR" provider.backed_up; assert_eq "provider.backed_up events" 1 "$J"
wait_in_sync
vm_create alpha v1

step "restore refuses a weak backup unless --allow-weak"
if [ "$HOOKS" = 1 ]; then
	# This service makes cheap backups (--insecure-fast-backup): weak ones.
	ok ctl provider delete prod --force
	expect_fail ctl provider restore "$T/prod.backup" --password-file "$T/password"
	assert_contains "weak restore refused: why" "$ERR" "weak"
	assert_contains "weak restore refused: what to do" "$ERR" "--allow-weak"
	ok ctl --json provider list
	json 'len(d)'; assert_eq "providers after a refused restore" 0 "$J"
	ok ctl provider restore "$T/prod.backup" --password-file "$T/password" --allow-weak
	backed_up prod; assert_eq "restored with --allow-weak" true "$J"
else
	# A production nkpd makes backups at the moderate cost: no flag needed.
	ok ctl provider delete prod --force
	ok ctl provider restore "$T/prod.backup" --password-file "$T/password"
	backed_up prod; assert_eq "restored without --allow-weak" true "$J"
fi
it_pass
