#!/bin/bash
# The VM key lifecycle on real LUKS-encrypted qcow2 disks, with qemu-img and
# qemu-io: DEKs reach QEMU as hex on a pipe (`vm exec`, or `vm unwrap --out -`
# into /dev/fd/N), never through a file. A VM key and two encrypted disks;
# a pattern written; rotate + rewrap, the pattern reads back; deep rekey (a
# new keysafe beside the old, `qemu-img convert` from the old DEK to the
# new); decrypt: disks first (converted to plain, then `vm decrypt`),
# vm-home last and refused while a disk is still encrypted.
. "$(dirname "$0")/lib.sh"
if ! command -v qemu-img >/dev/null || ! command -v qemu-io >/dev/null; then
	it_skip "qemu-img/qemu-io are not installed (Debian: qemu-utils)"
fi
it_begin

# vm_exec HOST KEYSAFE COMPONENT [--fd N] -- CMD...: CMD with the DEK on fd 3 (or N).
vm_exec() {
	local h=$1 ks=$2 c=$3
	shift 3
	hostctl "$h" vm exec --keysafe "$ks" --component "$c" "$@"
}

# The LUKS options QEMU needs for a disk whose secret object is SECRET. The
# DEK is 256 bits of full entropy: a long PBKDF iteration time adds nothing.
luks_opts() { echo "encrypt.format=luks,encrypt.key-secret=$1,encrypt.iter-time=10"; }

# qemu_retry CMD...: run CMD (a qemu-img create or convert to LUKS) again
# when qemu gives up timing its own PBKDF: it sizes LUKS' iteration count
# from its thread's CPU time, and with tick-based CPU accounting a short
# measurement can read 0 ("Unable to get accurate CPU usage"). That is
# qemu's clock, not nkp's; any other failure is returned at once.
qemu_retry() {
	local i
	for i in 1 2 3 4 5; do
		run "$@"
		case $ERR in
		*"Unable to get accurate CPU usage"*) log "qemu-img could not time its PBKDF, again ($i)" ;;
		*) return 0 ;;
		esac
	done
}
enc_image() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=$2"; }

# qio HOST KEYSAFE COMPONENT DISK QEMU-IO-COMMAND: qemu-io on an encrypted disk.
qio() {
	vm_exec "$1" "$2" "$3" -- qemu-io --object secret,id=s0,file=/dev/fd/3 \
		--image-opts "$(enc_image "$4" s0)" -c "$5"
}

# pattern_ok HOST KEYSAFE COMPONENT DISK BYTE: the disk's first 4 MiB hold BYTE.
pattern_ok() {
	ok qio "$1" "$2" "$3" "$4" "read -P $5 0 4M"
	assert_contains "qemu-io read of $4" "$OUT" "read 4194304/4194304 bytes"
}

# no_plain_pattern FILE BYTE: the file does not hold a 64 KiB run of BYTE in clear.
no_plain_pattern() {
	"$PYTHON3" -c 'import sys; sys.exit(1 if bytes([int(sys.argv[2], 16)]) * 65536 in open(sys.argv[1], "rb").read() else 0)' \
		"$1" "$2" || fail "$1 holds the pattern in clear"
}

VM=$T/vm/web1
D0=$T/disk0.qcow2
D1=$T/disk1.qcow2

step "a cluster of two hosts, a backed-up default provider, a VM key with two disks"
HOST_URL[alpha]=tcp://127.0.0.1:$(free_port)
HOST_URL[bravo]=tcp://127.0.0.1:$(free_port)
setup_cluster alpha bravo
make_provider gold --default
wait_in_sync
vm_create alpha web1
ok hostctl alpha vm add-disk --keysafe "$VM" --disk 0
ok hostctl alpha vm add-disk --keysafe "$VM" --disk 1

step "vm exec: usage errors, and a command that cannot run"
expect_exit 2 hostctl alpha vm exec --keysafe "$VM" --component disk:0
expect_exit 2 hostctl alpha vm exec --keysafe "$VM" --component disk:0 --fd 1 -- true
expect_exit 2 hostctl alpha vm exec --keysafe "$VM" --component disk:0 --format octal -- true
expect_exit 2 hostctl alpha vm exec --keysafe "$VM" -- true
expect_fail hostctl alpha vm exec --keysafe "$VM" --component disk:0 -- "$T/no-such-program"
expect_fail hostctl alpha vm exec --keysafe "$VM" --component disk:9 -- true
ok hostctl alpha vm exec --help
assert_contains "vm exec --help" "$OUT" "--fd N"

step "vm exec hands the DEK on an inherited pipe: exactly what vm unwrap --format hex prints"
dek alpha web1 disk:0; DEK0=$J
ok vm_exec alpha "$VM" disk:0 -- sh -c 'cat <&3; [ -p /proc/self/fd/3 ] && echo pipe'
assert_eq "the key on fd 3" "$DEK0
pipe" "$OUT"
ok vm_exec alpha "$VM" disk:0 --fd 7 --format base64 -- sh -c 'cat <&7'
assert_eq "base64 on fd 7" "$("$PYTHON3" -c 'import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1])).decode())' "$DEK0")" "$OUT"
ok vm_exec alpha "$VM" disk:0 --fd 0 -- sh -c 'wc -c'
assert_eq "hex on stdin (64 digits and a newline)" 65 "$OUT"
ok vm_exec alpha "$VM" disk:0 -- sh -c 'exit 0'
expect_exit 3 vm_exec alpha "$VM" disk:0 -- sh -c 'exit 3'

step "two LUKS qcow2 disks: one through vm exec, one through vm unwrap on a pipe"
qemu_retry vm_exec alpha "$VM" disk:0 -- qemu-img create -q -f qcow2 \
	--object secret,id=s0,file=/dev/fd/3 -o "$(luks_opts s0)" "$D0" 16M
[ "$RC" = 0 ] || fail "qemu-img create through vm exec failed: $ERR"
qemu_retry bash -c '"$0" --socket "$1" vm unwrap --keysafe "$2" --component disk:1 --out - --format hex |
	qemu-img create -q -f qcow2 --object secret,id=s1,file=/dev/stdin -o "$3" "$4" 16M' \
	"$NKP_HOSTCTL" "${HOST_DIR[alpha]}/host.sock" "$VM" "$(luks_opts s1)" "$D1"
[ "$RC" = 0 ] || fail "qemu-img create from a pipe failed: $ERR"
ok qemu-img info "$D0"
assert_contains "qemu-img info" "$OUT" "encrypted: yes"
assert_contains "qemu-img info" "$OUT" "format: luks"

step "a pattern written through alpha's key reads back through bravo's"
ok qio alpha "$VM" disk:0 "$D0" "write -P 0x5a 0 4M"
ok qio alpha "$VM" disk:1 "$D1" "write -P 0xa5 0 4M"
pattern_ok bravo "$VM" disk:0 "$D0" 0x5a
pattern_ok bravo "$VM" disk:1 "$D1" 0xa5
no_plain_pattern "$D0" 5a
no_plain_pattern "$D1" a5
expect_exit 1 qio alpha "$VM" disk:1 "$D0" "read -P 0x5a 0 4M"
assert_contains "another disk's key" "$ERR" "Invalid password"

step "rotate the primary key and rewrap: no DEK changes, the pattern reads back"
ok ctl provider rotate gold --timeout 30
ok hostctl alpha vm rewrap --keysafe "$VM"
vm_field bravo web1 'd["primary_version"]'; assert_eq "keysafe version after rewrap" 2 "$J"
check_dek alpha web1 disk:0 "$DEK0"
pattern_ok alpha "$VM" disk:0 "$D0" 0x5a
pattern_ok bravo "$VM" disk:1 "$D1" 0xa5
# The hosts report the rewrap with their next heartbeat; then nothing uses v1.
wait_until 15 "version 1 retired once alpha reports the rewrap" ctl provider retire gold --version 1
wait_states alpha gold "2:active"
pattern_ok alpha "$VM" disk:0 "$D0" 0x5a

step "deep rekey: new DEKs in a new keysafe; qemu-img convert from the old DEK to the new"
ok hostctl alpha vm rekey --keysafe "$VM" --deep --out "$VM.new"
dek alpha web1.new disk:0; NEW0=$J
assert_ne "disk:0 DEK after a deep rekey" "$DEK0" "$NEW0"
for d in 0 1; do
	src=$T/disk$d.qcow2
	# Old DEK on fd 3 (outer exec), new DEK on fd 4 (inner exec).
	qemu_retry vm_exec alpha "$VM" "disk:$d" -- \
		"$NKP_HOSTCTL" --socket "${HOST_DIR[alpha]}/host.sock" vm exec \
		--keysafe "$VM.new" --component "disk:$d" --fd 4 -- \
		qemu-img convert --object secret,id=old,file=/dev/fd/3 \
		--object secret,id=new,file=/dev/fd/4 --image-opts "$(enc_image "$src" old)" \
		-O qcow2 -o "$(luks_opts new)" "$src.new"
	[ "$RC" = 0 ] || fail "qemu-img convert to the new DEK failed: $ERR"
done
pattern_ok bravo "$VM.new" disk:0 "$D0.new" 0x5a
pattern_ok bravo "$VM.new" disk:1 "$D1.new" 0xa5
expect_exit 1 qio bravo "$VM" disk:0 "$D0.new" "read -P 0x5a 0 4M"
# Then the new files replace the old ones, disks first, keysafe last.
mv "$D0.new" "$D0"
mv "$D1.new" "$D1"
mv "$VM.new" "$VM"
pattern_ok alpha "$VM" disk:0 "$D0" 0x5a
no_plain_pattern "$D0" 5a

step "decrypt: vm-home is refused while a disk is still encrypted"
expect_fail hostctl alpha vm decrypt --keysafe "$VM" --component vm-home
assert_contains "the refusal says what to do" "$ERR" "decrypt the disks"
ok vm_exec alpha "$VM" disk:0 -- qemu-img convert --object secret,id=s0,file=/dev/fd/3 \
	--image-opts "$(enc_image "$D0" s0)" -O qcow2 "$D0.plain"
mv "$D0.plain" "$D0"
ok qemu-img info "$D0"
assert_not_contains "disk0 after convert" "$OUT" "encrypted: yes"
ok qemu-io -f qcow2 -c "read -P 0x5a 0 4M" "$D0"
ok hostctl alpha vm decrypt --keysafe "$VM" --component disk:0
vm_field bravo web1 'sorted(d["components"])'; assert_eq "components" '["disk:1", "vm-home"]' "$J"
expect_fail hostctl bravo vm decrypt --keysafe "$VM" --component vm-home

step "decrypt: the last disk, then vm-home"
ok vm_exec bravo "$VM" disk:1 -- qemu-img convert --object secret,id=s0,file=/dev/fd/3 \
	--image-opts "$(enc_image "$D1" s0)" -O qcow2 "$D1.plain"
mv "$D1.plain" "$D1"
ok qemu-io -f qcow2 -c "read -P 0xa5 0 4M" "$D1"
ok hostctl bravo vm decrypt --keysafe "$VM" --component disk:1
ok hostctl bravo vm decrypt --keysafe "$VM" --component vm-home
vm_field alpha web1 'd["components"]'; assert_eq "components after decrypt" '[]' "$J"
expect_fail hostctl alpha vm unwrap --keysafe "$VM" --component disk:0 --out - --format hex

it_pass
