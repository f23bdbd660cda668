# shellcheck shell=bash
# Software TPMs for the integration tests (swtpm, one per simulated
# machine), sourced after lib.sh by the tests that need them.

declare -A TPM_PORT TPM_PID

# swtpm_start NAME [PORT]: a software TPM with its own state (its own
# seeds: another machine) on two adjacent claimed ports, P and P+1, as
# tpm2-tss's swtpm TCTI wants. With PORT (already ours), on that port
# again: the TPM restarted, state kept, PCRs reset. Sets TPM_PORT[NAME].
swtpm_start() {
	local name=$1 fixed=${2:-} p i pid
	mkdir -p "$T/tpm-$name"
	for i in 1 2 3 4 5 6 7 8 9 10; do
		if [ -n "$fixed" ]; then
			p=$fixed
		else
			p=$(free_port)
			mkdir "$IT_PORT_DIR/$((p + 1))" 2>/dev/null || continue
			printf '%s' "$$" >"$IT_PORT_DIR/$((p + 1))/pid"
		fi
		swtpm socket --tpm2 --tpmstate "dir=$T/tpm-$name" \
			--server "type=tcp,port=$p,bindaddr=127.0.0.1" \
			--ctrl "type=tcp,port=$((p + 1)),bindaddr=127.0.0.1" \
			--flags not-need-init,startup-clear >>"$T/log/swtpm-$name.log" 2>&1 &
		pid=$!
		IT_PIDS+=("$pid")
		if wait_tpm "$pid" "$p"; then
			TPM_PORT[$name]=$p
			TPM_PID[$name]=$pid
			return 0
		fi
		wait "$pid" 2>/dev/null
		forget_pid "$pid"
		log "swtpm $name could not take ports $p/$((p + 1)); again ($i)"
		# A fixed port may still be held by the last one's closing sockets.
		[ -n "$fixed" ] && sleep 0.5
	done
	fail "swtpm $name did not start"
}

# wait_tpm PID PORT: 0 once swtpm answers on PORT and PORT+1; 1 if it exited.
wait_tpm() {
	local secs=$((10 * IT_WAIT_SCALE)) deadline
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while [ $(($(date +%s%N) / 1000000)) -lt "$deadline" ]; do
		kill -0 "$1" 2>/dev/null || return 1
		if (exec 3<>"/dev/tcp/127.0.0.1/$(($2 + 1))") 2>/dev/null &&
			(exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	fail "swtpm on port $2 did not answer within $secs s"
}

# swtpm_stop NAME: the TPM goes away (its ports stay claimed by us).
swtpm_stop() {
	kill -TERM "${TPM_PID[$1]}"
	wait "${TPM_PID[$1]}" 2>/dev/null
	forget_pid "${TPM_PID[$1]}"
	TPM_PID[$1]=""
}

tcti() { echo "swtpm:host=127.0.0.1,port=${TPM_PORT[$1]}"; }

# swtpm_manufacture NAME: NAME's TPM state made as a vendor would, before
# swtpm_start NAME: an RSA EK with a certificate (NV 0x01c00002) signed by
# a CA of its own in $T/ca-NAME. Sets CA_PEM[NAME]: that CA's root and
# issuing certificates, as `nkpctl host add --ek-ca` takes them.
# shellcheck disable=SC2034 # CA_PEM: used by the tests that source this file
declare -A CA_PEM
swtpm_manufacture() {
	local name=$1 ca=$T/ca-$1
	mkdir -p "$ca" "$T/tpm-$name"
	cat >"$ca/localca.conf" <<-CONF
		statedir = $ca
		signingkey = $ca/signkey.pem
		issuercert = $ca/issuercert.pem
		certserial = $ca/certserial
	CONF
	cat >"$ca/setup.conf" <<-CONF
		create_certs_tool= /usr/bin/swtpm_localca
		create_certs_tool_config = $ca/localca.conf
		create_certs_tool_options = /etc/swtpm-localca.options
		active_pcr_banks = sha256
	CONF
	swtpm_setup --tpm2 --tpmstate "$T/tpm-$name" --create-ek-cert --config "$ca/setup.conf" \
		>>"$T/log/swtpm-setup-$name.log" 2>&1 || fail "swtpm_setup for $name failed (see log)"
	cat "$ca/swtpm-localca-rootca-cert.pem" "$ca/issuercert.pem" >"$ca/bundle.pem"
	# shellcheck disable=SC2034 # used by the tests that source this file
	CA_PEM[$name]=$ca/bundle.pem
}

# start_host_tpm NAME: nkp-hostd run with its TPM (tcti NAME); waits until
# `nkp-hostctl status` answers.
start_host_tpm() {
	local h=$1
	"$NKP_HOSTD" run --state-dir "${HOST_DIR[$h]}" --listen "${HOST_URL[$h]}" \
		--tpm "$(tcti "$h")" >>"$T/log/host-$h.log" 2>&1 &
	HOST_PID[$h]=$!
	IT_PIDS+=("${HOST_PID[$h]}")
	IT_DAEMONS+="${HOST_PID[$h]} "
	wait_until 10 "nkp-hostd $h to answer on its host.sock" hostctl "$h" status
	kill -0 "${HOST_PID[$h]}" 2>/dev/null || fail "nkp-hostd $h exited at start (see log)"
}
