#!/bin/bash
# nkp's KMIP 1.4 client (through the test tool kmipc) against PyKMIP's
# server and against kmip-fake.py, all on loopback, with certificates made
# here (lib-kmip.sh):
#   a) keys made by kmipc are seen by PyKMIP's own client: the same state,
#      the same key (compared by SHA-256), found by name; PyKMIP 0.10 has no
#      Add Attribute, so an x- attribute is refused, and kmipc says so;
#   b) a revoke and a destroy done by PyKMIP's client are seen by kmipc;
#   c) an unknown id is "not found";
#   d) with two servers, a dead one first, kmipc uses the second;
#   e) the x-Vendor, x-Product, x-Product_Version attributes reach a server
#      that takes them, encoded exactly as KMIP 1.4 says (the recorded
#      request against bytes built here);
#   f) a server that never answers, or never speaks TLS, costs the timeout
#      and a "timed out" error, not a hang;
#   g) answers that are not TTLV or are for another operation are errors;
#   h) TLS: a server whose certificate is from another CA or for another
#      name is refused, and a client certificate from another CA is refused
#      by PyKMIP;
#   i) a server named by its IP address (the certificate has an IP SAN);
#   j) server certificates that must not pass: for clients only (no
#      serverAuth), the name only in the CN beside other SANs, the IP only
#      as a dNSName, the name only as an rfc822Name SAN;
#   k) a server that answers twice (a kept connection must not hand the
#      extra answer to the next request), one that trickles its answer a
#      byte at a time (the timeout holds), one announcing 4 GiB;
#   l) a server that carries out a Create on a kept connection and closes
#      it unanswered: the Create is not sent again (a second key).
# Skipped without kmipc, certtool or a python3 that can import kmip.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-kmip.sh"

: "${KMIPC:=$IT_BUILD/tests/integration/kmipc}"
: "${NKP_BENCH:=$IT_BUILD/tools/nkp-bench/nkp-bench}"
[ -x "$KMIPC" ] || it_skip "$KMIPC is not built"
it_begin
kmip_python

# kc URL ARGS...: kmipc on URL as the client cli (CA ca), bounded.
# shellcheck disable=SC2317 # called through ok, run and expect_fail
kc() {
	local url=$1
	shift
	timeout -k 2 "$IT_CMD_TIMEOUT" "$KMIPC" --kms "$url" "${KC_CREDS[@]}" "$@"
}

# kc_as CA CLIENT URL ARGS...: kmipc trusting CA.crt, as CLIENT.crt/.key.
# shellcheck disable=SC2317 # called through expect_fail
kc_as() {
	local ca=$1 cli=$2 url=$3
	shift 3
	timeout -k 2 "$IT_CMD_TIMEOUT" "$KMIPC" --kms "$url" --ca "$KMIP_DIR/$ca.crt" \
		--cert "$KMIP_DIR/$cli.crt" --key "$KMIP_DIR/$cli.key" "$@"
}

# assert_contains_any WHAT HAYSTACK NEEDLE...: one of the needles is in it.
assert_contains_any() {
	local what=$1 hay=$2 n
	shift 2
	for n in "$@"; do
		[[ ${hay,,} == *"${n,,}"* ]] && return 0
	done
	fail "$what: none of '$*' in:
$hay"
}

# expect_timed_out MS ARGS...: kmipc --timeout-ms MS ARGS fails within
# MS + 5 s (scaled) but not much sooner than MS, with "timed out".
expect_timed_out() {
	local ms=$1 t0 dt bound
	shift
	bound=$((ms + 5000 * IT_WAIT_SCALE))
	t0=$(($(date +%s%N) / 1000000))
	expect_fail kc "$@" --timeout-ms "$ms" create nkp-timeout
	dt=$(($(date +%s%N) / 1000000 - t0))
	assert_contains "kmipc's error on a silent server" "$ERR" "timed out"
	[ "$dt" -le "$bound" ] || fail "kmipc took $dt ms to give up, more than $bound ms"
	[ "$dt" -ge $((ms * 2 / 3)) ] || fail "kmipc gave up after $dt ms, before its timeout of $ms ms"
}

# is_hex64 WHAT VALUE
is_hex64() {
	[[ $2 =~ ^[0-9a-f]{64}$ ]] || fail "$1 is not a SHA-256 in hex: '$2'"
}

kmip_certs "$T/kmip"
KC_CREDS=(--ca "$KMIP_DIR/ca.crt" --cert "$KMIP_DIR/cli.crt" --key "$KMIP_DIR/cli.key")

step "a) PyKMIP: create and activate with kmipc, seen by PyKMIP's client"
kmip_start_pykmip "$KMIP_DIR"
PYK=kmip://localhost:$KMIP_PORT
ok kc "$PYK" discover
assert_contains "versions PyKMIP offers" "$OUT" "1.4"
ok kc "$PYK" create nkp-a
ID=$OUT
[[ $ID =~ ^[^[:space:]]+$ ]] || fail "kmipc create printed no single id: '$ID'"
ok kc "$PYK" state "$ID"
assert_eq "state of a new key" "pre-active" "$OUT"
ok kc "$PYK" activate "$ID"
ok kmip_py state "$ID"
assert_eq "state PyKMIP's client sees" "ACTIVE" "$OUT"
ok kc "$PYK" state "$ID"
assert_eq "state kmipc sees" "active" "$OUT"
ok kmip_py fingerprint "$ID"
FP=$OUT
is_hex64 "PyKMIP's fingerprint" "$FP"
ok kc "$PYK" get "$ID"
assert_eq "SHA-256 of the key, kmipc vs PyKMIP's client" "$FP" "$OUT"
ok kmip_py locate nkp-a
assert_eq "ids PyKMIP's client finds by name" "$ID" "$OUT"
ok kc "$PYK" locate nkp-a
assert_eq "ids kmipc finds by name" "$ID" "$OUT"
# PyKMIP 0.10 has no Add Attribute at all: Operation Failed, Invalid
# Message, "Error parsing request message".
expect_fail kc "$PYK" add-attr "$ID" x-Vendor nkp
assert_contains "kmipc's error names the server" "$ERR" "$KMIP_PORT"
assert_contains_any "kmipc's error on a refused attribute" "$ERR" \
	"attribute" "invalid message" "error parsing" "unsupported" "not supported"

step "b) PyKMIP's client revokes and destroys; kmipc sees it"
ok kmip_py revoke "$ID"
ok kc "$PYK" state "$ID"
assert_eq "state after a revoke (cessation of operation)" "deactivated" "$OUT"
ok kc "$PYK" create nkp-b
ID_B=$OUT
ok kc "$PYK" activate "$ID_B"
ok kmip_py revoke-compromised "$ID_B"
ok kc "$PYK" state "$ID_B"
assert_eq "state after a revoke (key compromise)" "compromised" "$OUT"
ok kmip_py destroy "$ID"
# PyKMIP 0.10 deletes a destroyed object outright (then: not found); a
# server that keeps it answers Destroyed.
run kc "$PYK" state "$ID"
if [ "$RC" = 0 ]; then
	assert_eq "state after a destroy" "destroyed" "$OUT"
else
	expect_fail kc "$PYK" state "$ID"
	assert_contains "kmipc state of a destroyed key" "$ERR" "not found"
fi
expect_fail kc "$PYK" get "$ID"
assert_ne "kmipc get of a destroyed key printed" "$FP" "$OUT"

step "c) an id PyKMIP never had: not found"
expect_fail kc "$PYK" state nkp-no-such-id
assert_contains "kmipc state of a missing id" "$ERR" "not found"
expect_fail kc "$PYK" get 999999
assert_contains "kmipc get of a missing id" "$ERR" "not found"

step "d) two servers: a closed port first, then PyKMIP"
DEAD=$(free_port)
expect_fail kc "kmip://localhost:$DEAD" discover
assert_contains "kmipc's error names the dead server" "$ERR" "$DEAD"
ok kc "kmip://localhost:$DEAD" --kms "$PYK" create nkp-d
ID_D=$OUT
ok kmip_py locate nkp-d
assert_eq "the key made through the second server" "$ID_D" "$OUT"

step "e) the fake takes x- attributes; the request bytes are KMIP 1.4's"
kmip_start_fake ok ok srv
FAKE=kmip://localhost:${FAKE_PORT[ok]}
ok kc "$FAKE" create nkp-e
FID=$OUT
ok kc "$FAKE" activate "$FID"
ok kc "$FAKE" get "$FID"
FAKE_FP=$("$KMIP_PYTHON" -c 'import hashlib; print(hashlib.sha256(bytes(range(32))).hexdigest())')
assert_eq "SHA-256 of the fake's fixed key" "$FAKE_FP" "$OUT"
# Once a Get returns, no copy of the key is left in kmipc's memory (the
# connection it came over is kept for the next request), on its stack
# neither: a symbol bound lazily on first call has the dynamic linker
# save the vector registers, where a memcpy left the key, on the stack.
ok kc "$FAKE" memscan + get "$FID" + memscan --stack
GOT=${OUT//$'\n'/ }
if [ "$GOT" = "- $FAKE_FP -" ]; then
	log "kmipc is built with AddressSanitizer: its memory is not scanned"
else
	assert_eq "copies of the key in kmipc: before, the fingerprint, after" \
		"0 $FAKE_FP 0" "$GOT"
fi
ok kc "$FAKE" add-attr "$FID" x-Vendor nkp
ok kc "$FAKE" add-attr "$FID" x-Product nkpd
ok kc "$FAKE" add-attr "$FID" x-Product_Version 1.0
# Built here, independently of the fake's codec: TTLV (KMIP 1.4 9.1) of
# Operation Add Attribute and of its Request Payload.
# shellcheck disable=SC2016 # Python, not shell
TTLV_PY='
import struct, sys
def item(tag, typ, v):
    pad = (8 - len(v) % 8) % 8
    return bytes.fromhex(tag) + bytes([typ]) + struct.pack(">I", len(v)) + v + bytes(pad)
def text(tag, s):
    return item(tag, 7, s.encode())
op = item("42005C", 5, struct.pack(">I", 0x0D))
uid, name, value = sys.argv[1:4]
attr = item("420008", 1, text("42000A", name) + text("42000B", value))
print(op.hex().upper(), item("420079", 1, text("420094", uid) + attr).hex().upper(),
      text("42000A", name).hex().upper())
'
check_add_attr() { # NAME VALUE: a recorded request holds exactly this
	local want op payload name line found=0
	want=$("$KMIP_PYTHON" -c "$TTLV_PY" "$FID" "$1" "$2") || fail "cannot build TTLV"
	read -r op payload name <<<"$want"
	while read -r line; do
		line=${line^^}
		if [[ $line == *"$op"* && $line == *"$payload"* ]]; then
			found=1
		fi
	done <"${FAKE_RECORD[ok]}"
	[ "$found" = 1 ] || fail "no recorded Add Attribute request for $1 has the payload
$payload
(the name as TTLV: $name); recorded:
$(cat "${FAKE_RECORD[ok]}")"
}
check_add_attr x-Vendor nkp
check_add_attr x-Product nkpd
check_add_attr x-Product_Version 1.0
# Every request says KMIP 1.4 in its header: Protocol Version {1, 4}.
V14=420069010000002042006A02000000040000000100000000
V14=${V14}42006B02000000040000000400000000
while read -r line; do
	assert_contains "protocol version in a request" "$line" "$V14"
done <"${FAKE_RECORD[ok]}"

step "e') a server that refuses x- attributes: kmipc says so"
kmip_start_fake refuse refuse-attrs srv
ok kc "kmip://localhost:${FAKE_PORT[refuse]}" create nkp-e2
expect_fail kc "kmip://localhost:${FAKE_PORT[refuse]}" add-attr "$OUT" x-Vendor nkp
assert_contains_any "kmipc's error on a refused attribute" "$ERR" "invalid field" "not supported"

step "f) a silent server and one that never speaks TLS: timed out"
kmip_start_fake silent silent srv
expect_timed_out 1500 "kmip://localhost:${FAKE_PORT[silent]}"
kmip_start_fake stall stall-tls srv
expect_timed_out 1500 "kmip://localhost:${FAKE_PORT[stall]}"
for n in silent stall; do
	kill -0 "${FAKE_PID[$n]}" 2>/dev/null || fail "the $n fake died"
	kmip_stop_fake "$n"
done

step "g) answers that are not TTLV, or for another operation: errors"
kmip_start_fake garbage garbage srv
kmip_start_fake wrongop wrong-op srv
for n in garbage wrongop; do
	expect_fail kc "kmip://localhost:${FAKE_PORT[$n]}" create nkp-g
	expect_fail kc "kmip://localhost:${FAKE_PORT[$n]}" get 1
	kill -0 "${FAKE_PID[$n]}" 2>/dev/null || fail "the $n fake died"
done

step "h) TLS: wrong CA, wrong name, rogue server, client from another CA"
expect_fail kc_as ca2 cli "$PYK" discover
assert_contains "kmipc trusting another CA" "$ERR" "certificate"
kmip_start_fake other ok other
expect_fail kc "kmip://localhost:${FAKE_PORT[other]}" discover
assert_contains_any "kmipc on a server certified for another name" "$ERR" "certificate" "name"
kmip_start_fake rogue ok rogue
expect_fail kc "kmip://localhost:${FAKE_PORT[rogue]}" discover
assert_contains "kmipc on a server from another CA" "$ERR" "certificate"
expect_fail kc_as ca cli2 "$PYK" discover
assert_contains "kmipc's error names the server" "$ERR" "$KMIP_PORT"
for n in other rogue; do
	[ -s "${FAKE_RECORD[$n]}" ] && fail "the $n fake got a KMIP request"
done

step "i) PyKMIP named by its IP address"
ok kc "kmip://127.0.0.1:$KMIP_PORT" create nkp-i
ID_I=$OUT
ok kc "kmip://127.0.0.1:$KMIP_PORT" activate "$ID_I"
ok kmip_py state "$ID_I"
assert_eq "state PyKMIP's client sees" "ACTIVE" "$OUT"

step "j) server certificates for clients, or naming the server otherwise"
kmip_cert "$KMIP_DIR" forcli ca 'cn = "localhost"
dns_name = "localhost"
ip_address = "127.0.0.1"
tls_www_client
signing_key'
kmip_cert "$KMIP_DIR" cnonly ca 'cn = "localhost"
dns_name = "kms.example.test"
tls_www_server
signing_key'
kmip_cert "$KMIP_DIR" ipasdns ca 'cn = "127.0.0.1"
dns_name = "127.0.0.1"
tls_www_server
signing_key'
kmip_cert "$KMIP_DIR" email ca 'cn = "kms.example.test"
email = "localhost"
tls_www_server
signing_key'
for n in forcli cnonly email; do
	kmip_start_fake "$n" ok "$n"
	expect_fail kc "kmip://localhost:${FAKE_PORT[$n]}" discover
	assert_contains "kmipc on the $n server certificate" "$ERR" "certificate"
done
kmip_start_fake ipasdns ok ipasdns
expect_fail kc "kmip://127.0.0.1:${FAKE_PORT[ipasdns]}" discover
assert_contains "kmipc on 127.0.0.1 as a dNSName" "$ERR" "certificate"
for n in forcli cnonly email ipasdns; do
	[ -s "${FAKE_RECORD[$n]}" ] && fail "the $n fake got a KMIP request"
	kmip_stop_fake "$n"
done

step "k) a server that answers twice, one that trickles, one announcing 4 GiB"
kmip_start_fake double double srv
ok kc "kmip://localhost:${FAKE_PORT[double]}" create nkp-k1 + create nkp-k2
mapfile -t KIDS <<<"$OUT"
[ "${#KIDS[@]}" = 2 ] || fail "kmipc printed not two ids: '$OUT'"
assert_ne "the second Create's id (not the stale answer to the first)" \
	"${KIDS[0]}" "${KIDS[1]}"
kmip_start_fake trickle trickle srv
expect_timed_out 1500 "kmip://localhost:${FAKE_PORT[trickle]}"
kmip_start_fake huge huge srv
expect_fail kc "kmip://localhost:${FAKE_PORT[huge]}" --timeout-ms 3000 create nkp-k
assert_contains "kmipc on a 4 GiB answer" "$ERR" "over"
for n in double trickle huge; do
	kill -0 "${FAKE_PID[$n]}" 2>/dev/null || fail "the $n fake died"
	kmip_stop_fake "$n"
done

step "l) a Create carried out, unanswered: not sent again"
kmip_start_fake drop drop-second srv
run kc "kmip://localhost:${FAKE_PORT[drop]}" create nkp-l1 + create nkp-l2
ok kc "kmip://localhost:${FAKE_PORT[drop]}" locate nkp-l2
assert_eq "keys the server made for one Create" 1 "$(grep -c . <<<"$OUT")"
kmip_stop_fake drop

step "bench: nkp-bench kmip against PyKMIP's own client (figures, not asserted)"
# A smoke run of the benchmark (docs/BENCHMARKS.md): its figures are
# logged, never compared.
BASELINE="$KMIP_PYTHON $KMIP_HERE/kmip-pyclient.py --host 127.0.0.1 --port $KMIP_PORT"
BASELINE+=" --ca $KMIP_DIR/ca.crt --cert $KMIP_DIR/cli.crt --key $KMIP_DIR/cli.key bench 10"
ok timeout -k 2 "$IT_CMD_TIMEOUT" "$NKP_BENCH" kmip --kms "$PYK" --ca "$KMIP_DIR/ca.crt" \
	--cert "$KMIP_DIR/cli.crt" --key "$KMIP_DIR/cli.key" --pairs 10 --rounds 2 \
	--baseline "$BASELINE" --json
json 'd["nkp_ops_per_s"] > 0 and d["baseline_ops_per_s"] > 0'
assert_eq "both clients measured" true "$J"
log "Create+Get on PyKMIP: $OUT"

kmip_stop_pykmip
it_pass
