#!/bin/bash
# The seal policy, against swtpm: a TPM host whose operator turns it on
# (`nkpctl host seal-policy NAME on`) binds its sealing key at rest to
# nkpd's PCR policy (TPM2_PolicyAuthorize by nkpd's policy key, one signed
# approval per baseline). Its state directory then opens only while its
# TPM's PCRs match an approved state: a machine booted into anything else
# does not start, with a clear error. A planned upgrade strands nothing:
# the new state is approved first (from a reference host already in it),
# the host binds to the new set at once, and starts in the new state. A
# removed baseline opens nothing bound after the removal. Turned off, the
# key is sealed to the TPM alone again. PCR 16 stands in for measured boot.
. "$(dirname "$0")/lib.sh"
if ! command -v swtpm >/dev/null; then
	it_skip "swtpm is not installed (Debian: swtpm)"
fi
if ! command -v tpm2_pcrextend >/dev/null; then
	it_skip "tpm2_pcrextend is not installed (Debian: tpm2-tools)"
fi
it_begin

INTERVAL=2
ATTEST_INTERVAL=$((INTERVAL * IT_WAIT_SCALE))
TURN=$((2 * INTERVAL + 3))
# The "upgrade": what both machines' PCR 16 is extended with.
UPGRADE=$(printf 'nkp-upgrade-2' | sha256sum | cut -d' ' -f1)

. "$(dirname "$0")/swtpm-lib.sh"

# pcr_extend NAME DIGEST: extends PCR 16 of NAME's TPM (a changed boot chain).
pcr_extend() {
	ok env TPM2TOOLS_TCTI="$(tcti "$1")" tpm2_pcrextend "16:sha256=$2"
}

# reboot_tpm NAME: the TPM restarted (state kept, PCRs back to their boot values).
reboot_tpm() {
	swtpm_stop "$1"
	swtpm_start "$1" "${TPM_PORT[$1]}"
}

# start_refused NAME: nkp-hostd does not start: its sealing key stays sealed.
start_refused() {
	run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTD" run --state-dir "${HOST_DIR[$1]}" \
		--listen "${HOST_URL[$1]}" --tpm "$(tcti "$1")"
	assert_eq "nkp-hostd $1 in an unapproved state: exit" 1 "$RC"
	assert_contains "its error" "$ERR" "match none of the states it approved"
}

tpm_host_init() {
	local h=$1
	HOST_DIR[$h]=$T/host-$h
	HOST_URL[$h]=tcp://127.0.0.1:$(free_port)
	ok "$NKP_HOSTD" init --state-dir "${HOST_DIR[$h]}" --service-key "$SVC_KEY" --tpm "$(tcti "$h")"
	HOST_KEY[$h]=$(printf '%s\n' "$OUT" | tail -n 1)
}

# seal_state HOST: J="STATE|ERROR", HOST's seal policy in the host list.
seal_state() {
	ok ctl --json host list
	json '"%s|%s" % next(((h.get("seal_policy", "(absent)"), h.get("seal_policy_error") or "") for h in d if h["name"] == "'"$1"'"), ("(no such host)", ""))'
}

seal_is() {
	local e
	seal_state "$1"
	e=${J#*|}
	[ "${J%%|*}" = "$2" ] && [[ ${e,,} == *"${3:-}"* ]]
}

# wait_seal HOST STATE [WORD]: polls the host list until HOST's seal policy
# is STATE (and its error has WORD).
wait_seal() {
	# A binding is TPM work on the host's own thread (sealed anew, opened,
	# replaced, the old parent revoked): allow it three turns.
	wait_until $((3 * TURN)) "$1's seal policy to be $2 ${3:-}" seal_is "$@"
	seal_state "$1"
	log "$1: seal policy $J"
}

gamma_left_base1() {
	ok ctl --json host list
	json 'next(h["attestation"] for h in d if h["name"] == "gamma")'
	[ "$J" = untrusted ]
}

# host_seal HOST: J=the host's own word: "bound" or "off".
host_seal() {
	OUT=$(hostctl "$1" --json status) || fail "nkp-hostctl status on $1 failed"
	json 'd["seal_policy"]'
}

step "1: alpha and gamma, with their TPMs, and beta without; baseline base1 from alpha"
swtpm_start alpha
swtpm_start gamma
service_init
tpm_host_init alpha
tpm_host_init gamma
host_init beta
start_service --attest-interval "$ATTEST_INTERVAL" --attest-pcrs 16
start_host_tpm alpha
start_host_tpm gamma
start_host beta
ok ctl host add alpha --address "${HOST_URL[alpha]}" --public-key "${HOST_KEY[alpha]}"
ok ctl host add gamma --address "${HOST_URL[gamma]}" --public-key "${HOST_KEY[gamma]}"
enrol beta
wait_in_sync
wait_until "$TURN" "a verified quote from alpha" ctl baseline add base1 --from-host alpha
wait_seal alpha off
# alpha's seal.tpm before any binding (a backup, a snapshot, freed blocks).
ok cp "${HOST_DIR[alpha]}/seal.tpm" "$T/alpha-seal-before.tpm"

step "2: seal-policy: usage, a host without a TPM refused, alpha on: bound"
expect_exit 2 ctl host seal-policy alpha
expect_exit 2 ctl host seal-policy alpha maybe
expect_fail ctl host seal-policy nosuch on
expect_fail ctl host seal-policy beta on
assert_contains "beta's refusal" "$ERR" "attestation key"
ok ctl host seal-policy alpha on
# PCR 16 stands in for firmware here: nkpd says what that would mean.
assert_contains "the warning on a software PCR" "$OUT" "no firmware PCR"
wait_seal alpha bound
assert_eq "alpha's binding revoked what it replaced: no error" "bound|" "$J"
host_seal alpha
assert_eq "alpha's own word" bound "$J"
assert_contains "alpha's log" "$(cat "$T/log/host-alpha.log")" "NKP-HOSTD-SEAL-POLICY"
make_provider common --default
wait_states alpha common "1:active"
vm_create alpha v1
dek alpha v1
V1=$J

step "3: alpha restarts in the approved state: its keys open"
stop_host alpha
reboot_tpm alpha
start_host_tpm alpha
host_seal alpha
assert_eq "alpha bound after its restart" bound "$J"
check_dek alpha v1 vm-home "$V1"

step "4: alpha boots into an unapproved state: it does not start"
stop_host alpha
pcr_extend alpha "$(printf 'rootkit' | sha256sum | cut -d' ' -f1)"
start_refused alpha
assert_not_contains "no key in the error" "$ERR" "$V1"
reboot_tpm alpha
start_host_tpm alpha
check_dek alpha v1 vm-home "$V1"

step "4b: the pre-binding seal.tpm put back, in an unapproved state: revoked"
stop_host alpha
pcr_extend alpha "$(printf 'rootkit' | sha256sum | cut -d' ' -f1)"
ok cp "${HOST_DIR[alpha]}/seal.tpm" "$T/alpha-seal-bound.tpm"
ok cp "$T/alpha-seal-before.tpm" "${HOST_DIR[alpha]}/seal.tpm"
run timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_HOSTD" run --state-dir "${HOST_DIR[alpha]}" \
	--listen "${HOST_URL[alpha]}" --tpm "$(tcti alpha)"
assert_eq "nkp-hostd alpha on its pre-binding seal.tpm: exit" 1 "$RC"
assert_contains "its error" "$ERR" "no longer holds its parent"
assert_not_contains "no key in the error" "$ERR" "$V1"
ok cp "$T/alpha-seal-bound.tpm" "${HOST_DIR[alpha]}/seal.tpm"
reboot_tpm alpha
start_host_tpm alpha
check_dek alpha v1 vm-home "$V1"

step "5: a planned upgrade: gamma upgraded first, base2 from it; alpha binds to both"
pcr_extend gamma "$UPGRADE"
# base2 from gamma's quote of its new state, not of its old one.
wait_until "$TURN" "gamma untrusted once upgraded" gamma_left_base1
wait_until "$TURN" "a verified quote from upgraded gamma" ctl baseline add base2 --from-host gamma
# The set of baselines changed: alpha (still in base1's state) binds anew.
wait_seal alpha bound
stop_host alpha
pcr_extend alpha "$UPGRADE"
start_host_tpm alpha
host_seal alpha
assert_eq "alpha bound after its upgrade" bound "$J"
check_dek alpha v1 vm-home "$V1"

step "6: base1 removed: alpha (upgraded) binds anew, and base1's state no longer opens"
ok ctl baseline remove base1
wait_seal alpha bound
stop_host alpha
reboot_tpm alpha
start_refused alpha
pcr_extend alpha "$UPGRADE"
start_host_tpm alpha
check_dek alpha v1 vm-home "$V1"

step "7: off: sealed to the TPM alone; any state opens it again"
ok ctl host seal-policy alpha off
wait_seal alpha off
host_seal alpha
assert_eq "alpha's own word after off" off "$J"
stop_host alpha
reboot_tpm alpha
start_host_tpm alpha
check_dek alpha v1 vm-home "$V1"

step "8: on again in a state no baseline approves: pending, with the host's reason"
ok ctl host seal-policy alpha on
wait_seal alpha pending "match none"
host_seal alpha
assert_eq "alpha still sealed to its TPM alone" off "$J"
ok ctl --json host list
assert_not_contains "no key in the host list" "$OUT" "$V1"

it_pass
