#!/usr/bin/env bash
# Runs the libFuzzer targets for a bounded time each and prints, per
# target, executions per second, the corpus size reached and how many
# inputs it added to the checked-in corpus.
#
#   tests/fuzz/run.sh [-b BUILDDIR] [-t SECONDS] [-j JOBS] [-o OUTDIR] [--regen] [--no-merge] [TARGET...]
#
# BUILDDIR (default build-fuzz) is a build set up with
# `CC=clang meson setup BUILDDIR -Dfuzz=enabled`. Each target starts from a
# copy of tests/fuzz/corpus/<target>/ and runs SECONDS (default 30), JOBS
# targets at a time (default 1); then
# the inputs of its run that add coverage the checked-in corpus lacks are
# merged into tests/fuzz/corpus/<target>/ (libFuzzer -merge=1; existing
# files are never changed), for a developer to review and commit; the
# "added" column counts them (--no-merge: leave the tree alone). OUTDIR
# (default a temporary directory) keeps each run's corpus, log and any
# crash artifact. --regen first rewrites the generated seeds with
# gen-corpus (the merged inputs stay). Exit status 1 if any target crashed, leaked, timed out or
# could not run.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
build=$src/build-fuzz
secs=30
jobs=1
out=
regen=0
merge=1
targets=()
while (($#)); do
	case $1 in
	-b) build=$(cd "$2" && pwd); shift 2 ;;
	-t) secs=$2; shift 2 ;;
	-j) jobs=$2; shift 2 ;;
	-o) out=$2; shift 2 ;;
	--regen) regen=1; shift ;;
	--no-merge) merge=0; shift ;;
	-h | --help)
		sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	-*) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
	*) targets+=("$1"); shift ;;
	esac
done

fuzzdir=$build/tests/fuzz
if [[ ! -x $fuzzdir/gen-corpus ]]; then
	echo "run.sh: no fuzz build in $build (CC=clang meson setup $build -Dfuzz=enabled)" >&2
	exit 2
fi
if ((regen)); then
	# Rewrites the generated seeds (by name); the inputs merged from runs
	# stay.
	"$fuzzdir/gen-corpus" "$src/tests/fuzz/corpus"
fi
if ((${#targets[@]} == 0)); then
	for f in "$fuzzdir"/fuzz-*; do
		[[ -x $f && -f $f ]] && targets+=("$(basename "$f")")
	done
fi
if [[ -z $out ]]; then
	out=$(mktemp -d "${TMPDIR:-/tmp}/nkp-fuzz-run-XXXXXX")
fi
mkdir -p "$out"

# run_one TARGET: fuzzes, merges, and writes its row to $out/fuzz-T/row;
# exit status 1 if it failed.
run_one() {
	local t=$1 work rc=0 runs eps files bytes result added seeds before
	work=$out/fuzz-$t
	rm -rf "$work"
	mkdir -p "$work/corpus"
	if [[ -d $src/tests/fuzz/corpus/fuzz-$t ]]; then
		cp "$src/tests/fuzz/corpus/fuzz-$t"/* "$work/corpus/"
	fi
	# -timeout: one input taking over 10 s is a finding; ASan's leak
	# check is on (libFuzzer's default with ASan).
	"$fuzzdir/fuzz-$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 -artifact_prefix="$work/" "$work/corpus" >"$work/log" 2>&1 || rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$work/log" | tail -1)
	eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$work/log" | tail -1)
	files=$(find "$work/corpus" -type f | wc -l)
	bytes=$(find "$work/corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
	result=ok
	added=-
	if ((rc != 0)); then
		result="FAILED (exit $rc, see $work/log)"
		grep -E '^(==[0-9]+==ERROR|SUMMARY|artifact_prefix|Test unit written)' "$work/log" | head -5 >&2 || true
	elif ((merge)); then
		# New coverage only: inputs whose features the checked-in corpus
		# lacks are copied in (named by their SHA-1, as libFuzzer does).
		seeds=$src/tests/fuzz/corpus/fuzz-$t
		mkdir -p "$seeds"
		before=$(find "$seeds" -type f | wc -l)
		if "$fuzzdir/fuzz-$t" -merge=1 -timeout=10 -rss_limit_mb=2048 "$seeds" "$work/corpus" \
			>"$work/merge.log" 2>&1; then
			added=$(($(find "$seeds" -type f | wc -l) - before))
		else
			result="FAILED (merge, see $work/merge.log)"
		fi
	fi
	printf '%-16s %10s %9s %8s %10s %6s  %s\n' "fuzz-$t" "${runs:-0}" "${eps:-0}" "$files" "$bytes" \
		"$added" "$result" >"$work/row"
	[[ $result == ok ]]
}

# JOBS targets at a time; the rows in the targets' order.
running=0
for t in "${targets[@]}"; do
	if ((running >= jobs)); then
		wait -n || true
		running=$((running - 1))
	fi
	run_one "${t#fuzz-}" &
	running=$((running + 1))
done
wait || true
failed=0
printf '%-16s %10s %9s %8s %10s %6s  %s\n' target runs exec/s corpus bytes added result
for t in "${targets[@]}"; do
	t=${t#fuzz-}
	if [[ -f $out/fuzz-$t/row ]]; then
		cat "$out/fuzz-$t/row"
		grep -q '  ok$' "$out/fuzz-$t/row" || failed=1
	else
		printf '%-16s %s\n' "fuzz-$t" "FAILED (no result)"
		failed=1
	fi
done
echo "run.sh: logs and corpora in $out"
if ((merge)); then
	echo "run.sh: new inputs (column added) are in tests/fuzz/corpus/: review and commit them"
fi
exit $failed
