#!/bin/bash
# The vtpm component keys swtpm's state encryption: swtpm gets the DEK as
# hex on an inherited pipe (`nkp-hostctl vm exec ... -- swtpm --key
# fd=3,format=hex,mode=aes-256-cbc`). Its state written under that key is
# read back under it (also on another host), and refused under another key
# or none.
. "$(dirname "$0")/lib.sh"
if ! command -v swtpm >/dev/null || ! command -v swtpm_ioctl >/dev/null; then
	it_skip "swtpm/swtpm_ioctl are not installed (Debian: swtpm swtpm-tools)"
fi
it_begin

VM=$T/vm/tpm1
STATE=$T/tpm-state

# swtpm_run HOST COMPONENT|none: starts swtpm on STATE with that DEK (or no
# key), lets it initialise (it loads and, the first time, writes its
# state), stops it with swtpm_ioctl -s; RC is swtpm's exit status.
swtpm_run() {
	local h=$1 c=$2 pid pre=() keyopt=()
	rm -f "$T/ctrl" "$T/srv"
	if [ "$c" != none ]; then
		pre=("$NKP_HOSTCTL" --socket "${HOST_DIR[$h]}/host.sock" vm exec
			--keysafe "$VM" --component "$c" --fd 3 --)
		keyopt=(--key "fd=3,format=hex,mode=aes-256-cbc")
	fi
	timeout -k 2 $((20 * IT_WAIT_SCALE)) "${pre[@]}" swtpm socket --tpm2 --tpmstate "dir=$STATE" \
		--ctrl "type=unixio,path=$T/ctrl" --server "type=unixio,path=$T/srv" \
		--flags not-need-init,startup-clear --log "file=$T/log/swtpm.log,level=1" \
		"${keyopt[@]}" >>"$T/log/swtpm.out" 2>&1 &
	pid=$!
	IT_PIDS+=("$pid")
	# Until its control socket exists or it exits (5 s, scaled).
	local deadline=$(($(date +%s%N) / 1000000 + 5000 * IT_WAIT_SCALE))
	while [ $(($(date +%s%N) / 1000000)) -lt "$deadline" ]; do
		[ -S "$T/ctrl" ] || ! kill -0 "$pid" 2>/dev/null && break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		swtpm_ioctl --unix "$T/ctrl" -s >/dev/null 2>&1
	fi
	wait "$pid"
	RC=$?
	forget_pid "$pid"
}

step "a VM key with a vTPM component"
HOST_URL[alpha]=tcp://127.0.0.1:$(free_port)
HOST_URL[bravo]=tcp://127.0.0.1:$(free_port)
setup_cluster alpha bravo
make_provider gold --default
wait_in_sync
vm_create alpha tpm1
ok hostctl alpha vm add-vtpm --keysafe "$VM"
mkdir -p "$STATE"

step "swtpm makes its state encrypted under the vtpm DEK"
swtpm_run alpha vtpm
assert_eq "swtpm with the vtpm key (first start)" 0 "$RC"
[ -s "$STATE/tpm2-00.permall" ] || fail "swtpm wrote no state"
cp "$STATE/tpm2-00.permall" "$T/permall.1"

step "the state opens again under the same DEK, unwrapped on another host"
swtpm_run bravo vtpm
assert_eq "swtpm with the vtpm key (restart on bravo)" 0 "$RC"

step "another key, or none, cannot open the state"
cp "$T/permall.1" "$STATE/tpm2-00.permall"
swtpm_run alpha vm-home
assert_ne "swtpm with another DEK" 0 "$RC"
grep -q "HMAC\|decrypt\|Could not initialize" "$T/log/swtpm.log" ||
	fail "swtpm did not say why it refused the state: $(cat "$T/log/swtpm.log")"
cp "$T/permall.1" "$STATE/tpm2-00.permall"
swtpm_run alpha none
assert_ne "swtpm without a key" 0 "$RC"
cmp -s "$T/permall.1" "$STATE/tpm2-00.permall" ||
	fail "a refused start changed the state file"

step "after a rotation and rewrap the vTPM still opens"
ok ctl provider rotate gold --timeout 30
ok hostctl alpha vm rewrap --keysafe "$VM"
swtpm_run alpha vtpm
assert_eq "swtpm with the vtpm key after rewrap" 0 "$RC"

it_pass
