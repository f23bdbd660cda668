#!/bin/bash
# The trusted provider, against swtpm: a host initialised with a TPM
# enrols with its attestation key (the token KEY.AK), and nkpd asks it for
# a quote of PCR 16 (standing in for measured boot: swtpm has no firmware
# event log) at connect and every attestation interval. A trusted
# provider's keys reach only a host whose latest quote verified and
# matched an approved baseline; they are wiped from it when its PCRs leave
# every baseline, when its baseline is removed or when its TPM stops
# answering, and come back when it is trusted again. A host without a TPM
# is never attested, never gets a trusted provider, cannot be a baseline's
# source, and keeps the other providers. Before any quote counts, the
# host's attestation key is proven to sit beside its TPM's EK (credential
# activation), and the EK's certificate checked under the CA given at
# enrolment: a host whose TPM another CA vouches for is never trusted. A
# host rebooted into other software reads no trusted key from its disk.
. "$(dirname "$0")/lib.sh"
if ! command -v swtpm >/dev/null; then
	it_skip "swtpm is not installed (Debian: swtpm)"
fi
if ! command -v tpm2_pcrextend >/dev/null; then
	it_skip "tpm2_pcrextend is not installed (Debian: tpm2-tools)"
fi
if ! command -v swtpm_setup >/dev/null || ! command -v swtpm_localca >/dev/null ||
	! command -v certtool >/dev/null; then
	it_skip "swtpm_setup, swtpm_localca or certtool missing (Debian: swtpm-tools, gnutls-bin)"
fi
it_begin

# nkpd's --attest-interval, in seconds (scaled: a slow build answers slower).
INTERVAL=2
ATTEST_INTERVAL=$((INTERVAL * IT_WAIT_SCALE))
# A change of PCRs or of TPM shows in the next quote: within one interval,
# plus a heartbeat and a push. Unscaled: the waits scale it.
TURN=$((2 * INTERVAL + 3))

. "$(dirname "$0")/swtpm-lib.sh"

# pcr_extend NAME: extends PCR 16 of NAME's TPM (as a changed boot chain
# would). swtpm serves one client at a time: this also checks that
# nkp-hostd does not hold its TPM open between uses.
pcr_extend() {
	local digest
	digest=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
	ok env TPM2TOOLS_TCTI="$(tcti "$1")" tpm2_pcrextend "16:sha256=$digest"
}

# attestation HOST: J="STATE|REASON", HOST's attestation in the host list.
attestation() {
	ok ctl --json host list
	json '"%s|%s" % next(((h.get("attestation", "(absent)"), h.get("attestation_reason") or "") for h in d if h["name"] == "'"$1"'"), ("(no such host)", ""))'
}

# wait_attestation HOST STATE SECONDS [WORD|!WORD]...: polls the host list
# until HOST's attestation is STATE with every WORD (lower case) in its
# reason and no !WORD, case aside. SECONDS is scaled.
wait_attestation() {
	local h=$1 want=$2 secs=$(($3 * IT_WAIT_SCALE)) deadline w good reason
	shift 3
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while :; do
		attestation "$h"
		reason=${J#*|}
		good=1
		[ "${J%%|*}" = "$want" ] || good=0
		for w in "$@"; do
			case $w in
			!*) [[ ${reason,,} != *"${w#!}"* ]] || good=0 ;;
			*) [[ ${reason,,} == *"$w"* ]] || good=0 ;;
			esac
		done
		if [ "$good" = 1 ]; then
			log "$h: attestation $J"
			return 0
		fi
		if [ $(($(date +%s%N) / 1000000)) -ge "$deadline" ]; then
			fail "$h's attestation did not become '$want' (reason with: $*) within $secs s; last: '$J'"
		fi
		sleep 0.2
	done
}

# events KIND HOST: J=the number of nkpd's KIND events about HOST.
events() {
	J=$(grep -c "\"kind\":\"${1//./\\.}\",.*\"host\":\"$2\"" "$SVC_DIR/events.jsonl" 2>/dev/null)
	J=${J:-0}
}

# events_over KIND HOST N: exit 0 once there are more than N. For wait_until.
events_over() {
	events "$1" "$2"
	[ "$J" -gt "$3" ]
}

# unwrap_refused HOST FILE: a VM key under a provider HOST no longer holds.
unwrap_refused() {
	expect_fail hostctl "$1" vm unwrap --keysafe "$T/vm/$2" --component vm-home --out - --format hex
}

step "1: alpha, initialised with its TPM, prints KEY.AK; beta, without one, KEY"
# alpha's and delta's TPMs come with EK certificates, each from a CA of
# its own; delta is enrolled naming alpha's CA, as a host whose TPM is
# not the one the operator vouched for.
swtpm_manufacture alpha
swtpm_start alpha
swtpm_manufacture delta
swtpm_start delta
service_init
HOST_DIR[alpha]=$T/host-alpha
HOST_URL[alpha]=tcp://127.0.0.1:$(free_port)
ok "$NKP_HOSTD" init --state-dir "${HOST_DIR[alpha]}" --service-key "$SVC_KEY" --tpm "$(tcti alpha)"
HOST_KEY[alpha]=$(printf '%s\n' "$OUT" | tail -n 1)
case ${HOST_KEY[alpha]} in
*.*) ;;
*) fail "nkp-hostd init --tpm: the last line is not KEY.AK: '${HOST_KEY[alpha]}'" ;;
esac
check_pubkey "the key in alpha's token" "${HOST_KEY[alpha]%%.*}"
"$PYTHON3" -c '
import base64, sys
sys.exit(0 if len(base64.b64decode(sys.argv[1], validate=True)) > 0 else 1)' \
	"${HOST_KEY[alpha]#*.}" 2>/dev/null ||
	fail "the AK in alpha's token is not base64: '${HOST_KEY[alpha]#*.}'"
host_init beta
assert_not_contains "beta's token (no TPM)" "${HOST_KEY[beta]}" "."
HOST_DIR[delta]=$T/host-delta
HOST_URL[delta]=tcp://127.0.0.1:$(free_port)
ok "$NKP_HOSTD" init --state-dir "${HOST_DIR[delta]}" --service-key "$SVC_KEY" --tpm "$(tcti delta)"
HOST_KEY[delta]=$(printf '%s\n' "$OUT" | tail -n 1)

step "2: enrolled; alpha untrusted for want of a baseline, beta not attested"
start_service --attest-interval "$ATTEST_INTERVAL" --attest-pcrs 16
start_host_tpm alpha
start_host beta
start_host_tpm delta
expect_exit 2 ctl host add x --address "${HOST_URL[beta]}" --public-key "${HOST_KEY[beta]}" \
	--ek-ca "${CA_PEM[alpha]}"
assert_contains "--ek-ca without an attestation key" "$ERR" "attestation key"
ok ctl host add alpha --address "${HOST_URL[alpha]}" --public-key "${HOST_KEY[alpha]}" \
	--ek-ca "${CA_PEM[alpha]}"
enrol beta
ok ctl host add delta --address "${HOST_URL[delta]}" --public-key "${HOST_KEY[delta]}" \
	--ek-ca "${CA_PEM[alpha]}"
wait_in_sync
wait_attestation alpha untrusted "$TURN" baseline
wait_attestation beta none "$TURN"
wait_attestation delta untrusted "$TURN" "ek certificate" "does not verify"

step "3: baseline base1 from alpha: alpha trusted; none from beta, nor from a stranger"
events host.attested alpha
N_OK=$J
ok ctl baseline add base1 --from-host alpha
wait_attestation alpha trusted "$TURN"
wait_until "$TURN" "a host.attested event for alpha" events_over host.attested alpha "$N_OK"
expect_fail ctl baseline add bad --from-host beta
expect_fail ctl baseline add bad --from-host nosuch
expect_fail ctl baseline add bad --from-host delta
# delta's PCRs are alpha's (both fresh), but its TPM is not vouched for.
wait_attestation delta untrusted "$TURN" "ek certificate"
ok ctl --json baseline list
json 'sorted(b["name"] for b in d)'
assert_eq "baselines" '["base1"]' "$J"

step "4: a trusted provider reaches alpha only; a plain one both"
make_provider common --default
make_provider vault --trusted
wait_states alpha vault "1:active" "$TURN"
wait_states alpha common "1:active"
wait_states beta common "1:active"
host_providers beta
assert_eq "providers on beta" "common" "$J"
wait_states delta common "1:active"
host_providers delta
assert_eq "providers on delta (its EK not vouched for)" "common" "$J"
vm_create alpha v1 --provider vault
dek alpha v1
V1=$J
vm_create beta b1
dek beta b1
B1=$J
expect_fail hostctl beta vm create --keysafe "$T/vm/b2" --vm-uuid "$(vm_uuid b2)" --vm-name b2 \
	--provider vault

step "5: PCR 16 of alpha extended: untrusted, vault wiped, its VM locked"
events host.attestation_failed alpha
N_FAIL=$J
pcr_extend alpha
wait_attestation alpha untrusted "$TURN" pcr baseline
wait_until "$TURN" "a host.attestation_failed event for alpha" \
	events_over host.attestation_failed alpha "$N_FAIL"
wait_states alpha vault ""
host_providers alpha
assert_eq "providers left on alpha" "common" "$J"
unwrap_refused alpha v1
expect_fail hostctl alpha vm create --keysafe "$T/vm/v2" --vm-uuid "$(vm_uuid v2)" --vm-name v2 \
	--provider vault
check_dek beta b1 vm-home "$B1"

step "6: baseline base2 from alpha's new PCRs: trusted again, vault back"
events host.attested alpha
N_OK=$J
ok ctl baseline add base2 --from-host alpha
wait_attestation alpha trusted "$TURN"
wait_until "$TURN" "a host.attested event for alpha" events_over host.attested alpha "$N_OK"
wait_states alpha vault "1:active"
check_dek alpha v1 vm-home "$V1"

step "7: both baselines listed; base2 removed: alpha untrusted again"
ok ctl --json baseline list
json 'sorted(b["name"] for b in d)'
assert_eq "baselines" '["base1", "base2"]' "$J"
ok ctl baseline remove base2
expect_fail ctl baseline remove base2
ok ctl --json baseline list
json 'sorted(b["name"] for b in d)'
assert_eq "baselines after removing base2" '["base1"]' "$J"
wait_attestation alpha untrusted "$TURN" pcr baseline
wait_states alpha vault ""
unwrap_refused alpha v1

step "8: alpha's TPM stops: no quote, untrusted; back (PCRs reset): base1 matches"
events host.attestation_failed alpha
N_FAIL=$J
swtpm_stop alpha
wait_attestation alpha untrusted "$TURN" quote '!baseline'
wait_until "$TURN" "a host.attestation_failed event for alpha" \
	events_over host.attestation_failed alpha "$N_FAIL"
host_providers alpha
assert_eq "providers on alpha without its TPM" "common" "$J"
# The same TPM (same state and ports) after a restart, as after a reboot:
# PCR 16 back to its boot value, the one base1 approved.
swtpm_start alpha "${TPM_PORT[alpha]}"
wait_attestation alpha trusted "$TURN"
wait_states alpha vault "1:active"
check_dek alpha v1 vm-home "$V1"

step "9: alpha reboots into other software: no trusted key from its disk, none pushed"
# Its nkp-hostd stops, PCR 16 changes (another boot chain) and it starts
# again while nkpd is away (so nothing nkpd does hides what the disk
# gave back): the trusted keys were never written. Then nkpd, seeing a
# new boot, asks for a quote before it trusts it again; this one matches
# nothing.
events host.attestation_failed alpha
N_FAIL=$J
stop_service
stop_host alpha
pcr_extend alpha
start_host_tpm alpha
host_providers alpha
assert_eq "providers on alpha read back from its disk" "common" "$J"
unwrap_refused alpha v1
start_service --attest-interval "$ATTEST_INTERVAL" --attest-pcrs 16
wait_attestation alpha untrusted "$TURN" baseline
wait_until "$TURN" "a host.attestation_failed event for alpha" \
	events_over host.attestation_failed alpha "$N_FAIL"
ok ctl host wait --in-sync --timeout $((TURN * IT_WAIT_SCALE))
host_providers alpha
assert_eq "providers on alpha after the reboot" "common" "$J"
unwrap_refused alpha v1

step "beta throughout: never attested, never held vault, kept its keys"
wait_attestation beta none 1
host_providers beta
assert_eq "providers on beta" "common" "$J"
check_dek beta b1 vm-home "$B1"

it_pass
