# shellcheck shell=bash
# KMIP test peers, sourced after lib.sh:
#
#   . "$(dirname "$0")/lib.sh"
#   . "$(dirname "$0")/lib-kmip.sh"
#
# kmip_python: KMIP_PYTHON=an interpreter that can `import kmip` (Debian's
#   python3-pykmip lives under /usr/bin/python3; the python3 on PATH may be
#   another one); skips the test without one.
# kmip_certs DIR: a CA and the certificates below, EC P-256, PEM.
# kmip_start_pykmip DIR [PORT] / kmip_stop_pykmip: PyKMIP's server on
#   127.0.0.1 (on PORT again, for a restart).
# kmip_py OP ARGS...: PyKMIP's own client (kmip-pyclient.py) on that server.
# kmip_start_fake NAME MODE CERT / kmip_stop_fake NAME: kmip-fake.py.

KMIP_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
KMIP_PYTHON=""
KMIP_DIR=""
KMIP_PORT=""
KMIP_PID=""
KMIP_CHILDREN=()
declare -A FAKE_PORT FAKE_PID FAKE_RECORD

# kmip_python: sets KMIP_PYTHON or skips the test.
kmip_python() {
	local p
	for p in "${PYTHON3:-}" /usr/bin/python3 python3; do
		[ -n "$p" ] || continue
		command -v "$p" >/dev/null 2>&1 || continue
		if "$p" -c 'import kmip.pie.client, kmip.services.server' >/dev/null 2>&1; then
			KMIP_PYTHON=$(command -v "$p")
			return 0
		fi
	done
	it_skip "no python3 can import kmip (Debian: apt-get install python3-pykmip)"
}

# kmip_cert DIR NAME CA TEMPLATE: an EC P-256 key NAME.key (mode 0600) and
# a certificate NAME.crt signed by CA (CA.crt/CA.key), or self-signed when
# CA is "self". TEMPLATE: certtool template lines.
kmip_cert() {
	local dir=$1 name=$2 ca=$3 tmpl=$4
	printf '%s\nexpiration_days = 30\n' "$tmpl" >"$dir/$name.tmpl"
	(umask 077 && certtool --generate-privkey --key-type=ecdsa --curve=secp256r1 \
		--no-text --outfile "$dir/$name.key") >/dev/null 2>&1 ||
		fail "certtool: cannot make the key $name.key"
	chmod 600 "$dir/$name.key"
	if [ "$ca" = self ]; then
		certtool --generate-self-signed --load-privkey "$dir/$name.key" \
			--template "$dir/$name.tmpl" --no-text --outfile "$dir/$name.crt" \
			>/dev/null 2>"$dir/$name.err" ||
			fail "certtool: cannot make $name.crt: $(cat "$dir/$name.err")"
	else
		certtool --generate-certificate --load-privkey "$dir/$name.key" \
			--load-ca-certificate "$dir/$ca.crt" --load-ca-privkey "$dir/$ca.key" \
			--template "$dir/$name.tmpl" --no-text --outfile "$dir/$name.crt" \
			>/dev/null 2>"$dir/$name.err" ||
			fail "certtool: cannot make $name.crt: $(cat "$dir/$name.err")"
	fi
	rm -f "$dir/$name.tmpl" "$dir/$name.err"
}

# kmip_certs DIR: ca (the CA both peers trust); srv (server, localhost and
# 127.0.0.1); cli (client, CN nkpd: PyKMIP needs the clientAuth usage and
# takes the CN as the identity); other (server, kms.example.test only); ca2
# (another CA) with rogue (server, localhost and 127.0.0.1) and cli2
# (client, CN nkpd). Sets KMIP_DIR=DIR.
kmip_certs() {
	local dir=$1
	command -v certtool >/dev/null || it_skip "certtool (gnutls-bin) is not installed"
	mkdir -p "$dir"
	KMIP_DIR=$dir
	local ca='cn = "nkp test KMIP CA"
ca
cert_signing_key
crl_signing_key'
	local srv='cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_server
signing_key'
	local cli='cn = "nkpd"
tls_www_client
signing_key'
	kmip_cert "$dir" ca self "$ca"
	kmip_cert "$dir" srv ca "$srv"
	kmip_cert "$dir" cli ca "$cli"
	kmip_cert "$dir" other ca 'cn = "kms.example.test"
dns_name = "kms.example.test"
tls_www_server
signing_key'
	kmip_cert "$dir" ca2 self "${ca/nkp test KMIP CA/another KMIP CA}"
	kmip_cert "$dir" rogue ca2 "$srv"
	kmip_cert "$dir" cli2 ca2 "$cli"
}

# kmip_port_open PORT: exit 0 when 127.0.0.1:PORT accepts a connection.
kmip_port_open() {
	"$KMIP_PYTHON" -c '
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()
except OSError:
    sys.exit(1)' "$1"
}

# kmip_wait_port PORT PID WHAT LOG SECONDS: waits (scaled) until PORT
# accepts connections; fails with the tail of LOG if it does not or if PID
# exits first.
kmip_wait_port() {
	local port=$1 pid=$2 what=$3 logf=$4 secs=$(($5 * IT_WAIT_SCALE)) deadline
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while ! kmip_port_open "$port"; do
		kill -0 "$pid" 2>/dev/null ||
			fail "$what exited at start:
$(tail -n 20 "$logf" 2>/dev/null)"
		[ $(($(date +%s%N) / 1000000)) -lt "$deadline" ] ||
			fail "$what did not listen on 127.0.0.1:$port within $secs s:
$(tail -n 20 "$logf" 2>/dev/null)"
		sleep 0.2
	done
}

# kmip_start_pykmip DIR [PORT]: PyKMIP's server (on PORT, or a free one), with its config, database and an
# empty policy directory under DIR, certificates from DIR (kmip_certs),
# logging to $T/log/pykmip.log (printed on failure) at INFO: DEBUG would log
# key bytes. Sets KMIP_DIR, KMIP_PORT and KMIP_PID. PyKMIP forks two helper
# processes (a multiprocessing manager and its policy directory monitor)
# before it listens; they are registered by PID too, as a SIGKILLed server
# leaves its monitor running.
kmip_start_pykmip() {
	local dir=$1
	[ -n "$KMIP_PYTHON" ] || kmip_python
	KMIP_DIR=$dir
	KMIP_PORT=${2:-$(free_port)}
	mkdir -p "$dir/policies"
	cat >"$dir/server.conf" <<EOF
[server]
hostname=127.0.0.1
port=$KMIP_PORT
certificate_path=$dir/srv.crt
key_path=$dir/srv.key
ca_path=$dir/ca.crt
auth_suite=TLS1.2
enable_tls_client_auth=True
tls_cipher_suites=TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
policy_path=$dir/policies
logging_level=INFO
database_path=$dir/pykmip.db
EOF
	# What /usr/bin/pykmip-server runs, under the interpreter found above.
	"$KMIP_PYTHON" -c 'import sys; from kmip.services.server.server import main; sys.argv[0] = "pykmip-server"; main()' \
		-f "$dir/server.conf" -l "$T/log/pykmip.log" >>"$T/log/pykmip-out.log" 2>&1 &
	KMIP_PID=$!
	IT_PIDS+=("$KMIP_PID")
	kmip_wait_port "$KMIP_PORT" "$KMIP_PID" "PyKMIP's server" "$T/log/pykmip.log" 20
	kmip_children "$KMIP_PID"
	IT_PIDS+=("${KMIP_CHILDREN[@]}")
}

# kmip_children PID: KMIP_CHILDREN=the PIDs of PID's direct children (from
# /proc; no procps needed).
kmip_children() {
	local st pid ppid
	KMIP_CHILDREN=()
	for st in /proc/[0-9]*/status; do
		ppid=$(sed -n 's/^PPid:[[:space:]]*//p' "$st" 2>/dev/null)
		[ "$ppid" = "$1" ] || continue
		pid=${st#/proc/}
		KMIP_CHILDREN+=("${pid%/status}")
	done
}

# kmip_stop_pykmip: stops PyKMIP's server by its PID, SIGKILL after a
# bounded wait. PyKMIP's exit status is not checked. SIGINT, not SIGTERM:
# on SIGTERM PyKMIP 0.10 only clears a flag and its accept() is restarted
# (PEP 475), so it would stop at the next connection only.
kmip_stop_pykmip() {
	local pid
	[ -n "$KMIP_PID" ] || return 0
	kmip_stop "$KMIP_PID" INT
	# It stops its helpers itself; any left get SIGTERM, then SIGKILL.
	for pid in "${KMIP_CHILDREN[@]}"; do
		kmip_stop "$pid"
	done
	KMIP_PID=""
	KMIP_CHILDREN=()
}

# kmip_stop PID [SIGNAL]: SIGNAL (default TERM), up to 5 s (scaled), then
# SIGKILL; reaps it (if it is our child) and forgets it.
kmip_stop() {
	local pid=$1 sig=${2:-TERM} secs=$((5 * IT_WAIT_SCALE)) deadline
	kill -"$sig" "$pid" 2>/dev/null
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while kill -0 "$pid" 2>/dev/null && [ $(($(date +%s%N) / 1000000)) -lt "$deadline" ]; do
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	forget_pid "$pid"
}

# kmip_py OP ARGS...: PyKMIP's client against the PyKMIP server, as cli.
kmip_py() {
	timeout -k 2 "$IT_CMD_TIMEOUT" "$KMIP_PYTHON" "$KMIP_HERE/kmip-pyclient.py" \
		--host 127.0.0.1 --port "$KMIP_PORT" --ca "$KMIP_DIR/ca.crt" \
		--cert "$KMIP_DIR/cli.crt" --key "$KMIP_DIR/cli.key" "$@"
}

# kmip_start_fake NAME MODE CERT: kmip-fake.py in MODE serving CERT.crt and
# CERT.key from KMIP_DIR (kmip_certs), trusting client certificates from KMIP_DIR/ca.crt,
# recording requests to KMIP_DIR/fake-NAME.rec, logging to
# $T/log/fake-NAME.log. Sets FAKE_PORT[NAME],
# FAKE_PID[NAME] and FAKE_RECORD[NAME].
kmip_start_fake() {
	local n=$1 mode=$2 cert=$3 dir=$KMIP_DIR ready
	[ -n "$KMIP_PYTHON" ] || kmip_python
	ready=$dir/fake-$n.ready
	rm -f "$ready"
	FAKE_PORT[$n]=$(free_port)
	FAKE_RECORD[$n]=$dir/fake-$n.rec
	: >"${FAKE_RECORD[$n]}"
	"$KMIP_PYTHON" "$KMIP_HERE/kmip-fake.py" --port "${FAKE_PORT[$n]}" --mode "$mode" \
		--ca "$dir/ca.crt" --cert "$dir/$cert.crt" --key "$dir/$cert.key" \
		--ready "$ready" --record "${FAKE_RECORD[$n]}" >>"$T/log/fake-$n.log" 2>&1 &
	FAKE_PID[$n]=$!
	IT_PIDS+=("${FAKE_PID[$n]}")
	local secs=$((10 * IT_WAIT_SCALE)) deadline
	deadline=$(($(date +%s%N) / 1000000 + secs * 1000))
	while [ ! -s "$ready" ]; do
		kill -0 "${FAKE_PID[$n]}" 2>/dev/null ||
			fail "the fake KMIP server $n exited at start:
$(tail -n 20 "$T/log/fake-$n.log")"
		[ $(($(date +%s%N) / 1000000)) -lt "$deadline" ] ||
			fail "the fake KMIP server $n was not ready within $secs s"
		sleep 0.1
	done
}

# kmip_stop_fake NAME: SIGTERM (the fake exits at once), SIGKILL if not.
kmip_stop_fake() {
	[ -n "${FAKE_PID[$1]:-}" ] || return 0
	kmip_stop "${FAKE_PID[$1]}"
	FAKE_PID[$1]=""
}
