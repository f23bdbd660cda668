#!/bin/bash
# A local group may use host.sock besides root: with --local-group G the
# socket is 0660 and the state directory 0710 in group G; a user in G (as
# a supplementary group or as its primary group) is served, any other user
# is refused, and the daemon's own peer check refuses a non-member even
# when the file permissions are opened up by mistake. Needs root (it makes
# a throw-away user and group, removed at the end); skipped otherwise.
. "$(dirname "$0")/lib.sh"
it_begin
[ "$(id -u)" = 0 ] || it_skip "needs root to make a test user and group"
for p in useradd groupadd userdel groupdel setpriv; do
	command -v "$p" >/dev/null || it_skip "$p is not installed"
done

G=nkpit$$
U=nkpiu$$
ok groupadd "$G"
# Removed on any exit, keeping the test's exit status for it_cleanup.
trap 'rc=$?; userdel "$U" 2>/dev/null; groupdel "$G" 2>/dev/null; (exit $rc); it_cleanup' EXIT
ok useradd --no-create-home --user-group --shell /usr/sbin/nologin "$U"
GID=$(getent group "$G" | cut -d: -f3)
UID_U=$(id -u "$U")
GID_U=$(id -g "$U")     # the user's own group, not G
chmod 711 "$T"   # the test user must reach the state directory below

# nkp-hostd run with --local-group G (init as usual).
REAL_HOSTD=$NKP_HOSTD
NKP_HOSTD=$T/hostd-group
printf '#!/bin/sh\nif [ "$1" = run ]; then exec "%s" "$@" --local-group "%s"; fi\nexec "%s" "$@"\n' \
	"$REAL_HOSTD" "$G" "$REAL_HOSTD" >"$NKP_HOSTD"
chmod +x "$NKP_HOSTD"
setup_cluster alpha
SOCK=${HOST_DIR[alpha]}/host.sock

step "host.sock 0660 and the state directory 0710, both in group $G"
assert_eq "host.sock mode and group" "660 $G" "$(stat -c '%a %G' "$SOCK")"
assert_eq "state directory mode and group" "710 $G" "$(stat -c '%a %G' "${HOST_DIR[alpha]}")"
for f in "${HOST_DIR[alpha]}"/*; do
	[ "$f" = "$SOCK" ] && continue
	m=$(stat -c %a "$f")
	case $m in 600|700) ;; *) fail "$f is $m: only host.sock may be open to the group" ;; esac
done

as_user() { # SETPRIV-GROUP-ARGS... -- nkp-hostctl ARGS
	local args=()
	while [ "$1" != -- ]; do args+=("$1"); shift; done
	shift
	timeout -k 2 "$IT_CMD_TIMEOUT" setpriv --reuid "$UID_U" "${args[@]}" \
		"$NKP_HOSTCTL" --socket "$SOCK" "$@"
}

step "a user outside the group is refused"
expect_fail as_user --regid "$GID_U" --clear-groups -- status

step "a member is served: supplementary group, then primary group"
ok as_user --regid "$GID_U" --groups "$GID" -- --json status
json 'd["host_name"] != ""'; assert_eq "status as a member" true "$J"
ok as_user --regid "$GID" --clear-groups -- status

step "the daemon's own check refuses a non-member when the files are opened up"
chmod 711 "${HOST_DIR[alpha]}"
chmod 666 "$SOCK"
expect_fail as_user --regid "$GID_U" --clear-groups -- status
assert_contains "refusal" "$ERR" "permission"
wait_until 5 "an input.bad event for uid $UID_U" \
	grep -q "peer uid $UID_U gid $GID_U is not root" "${HOST_DIR[alpha]}/events.jsonl"
ok hostctl alpha status      # root still is served

step "without CAP_CHOWN (e.g. the shipped unit): a warning, and root only"
stop_host alpha
printf '#!/bin/sh\nif [ "$1" = run ]; then exec setpriv --bounding-set=-chown --inh-caps=-chown "%s" "$@" --local-group "%s"; fi\nexec "%s" "$@"\n' \
	"$REAL_HOSTD" "$G" "$REAL_HOSTD" >"$NKP_HOSTD"
start_host alpha
assert_eq "host.sock without CAP_CHOWN" 600 "$(stat -c %a "$SOCK")"
assert_eq "state directory without CAP_CHOWN" 700 "$(stat -c %a "${HOST_DIR[alpha]}")"
assert_contains "the daemon says why" "$(cat "$T/log/host-alpha.log")" "NKP-LOCAL-GROUP"
expect_fail as_user --regid "$GID_U" --groups "$GID" -- status
ok hostctl alpha status
it_pass
