# The live test inside the ARM64 VM (busybox sh), as on x86-64
# (tests/cli/live.rs): a 4-thread program keeps calling the corpus image
# 13-cumulative-series v1 (aarch64-linux); packages v1 -> v2, then v1 -> v3
# (re-pointing), then --revert of v3 must switch its own output each time,
# under the same PID. Then the Process target's own tests, when present.
# Prints "HOTPATCH-VM: PASS" or "HOTPATCH-VM: FAIL: reason" at the end.

T=/test
OUT=/tmp/liveprog.out
V1="log_code(5)=0 log_bytes(2)=4294967280"
V2="log_code(5)=-1 log_bytes(2)=4294967280"
V3="log_code(5)=-1 log_bytes(2)=8589934576"
P=

fail() {
  echo "HOTPATCH-VM: FAIL: $*"
  [ -n "$P" ] && kill "$P" 2>/dev/null
  echo "HOTPATCH-VM: last output of the program:"
  tail -n 8 "$OUT" 2>/dev/null
  exit 1
}

# Wait until every worker prints $2 in the lines after line $1 (its first
# line after a change may have been computed before it), at least twice;
# fail on any other result after that first line.
settles() {
  from=$1 want=$2 tries=0
  while :; do
    tail -n +"$((from + 1))" "$OUT" | awk -v want="$want" '
      /^T[0-9]+ / {
        t = $1; n[t]++; r = $0; sub(/^T[0-9]+ [0-9]+ /, "", r)
        if (r == want) { good[t]++; next }
        if (n[t] > 1) { print "  " $0; bad = 1 }
      }
      END {
        if (bad) exit 2
        for (t in good) if (good[t] >= 2) ok++
        exit (ok >= 4 ? 0 : 1)
      }'
    case $? in
      0) return 0 ;;
      2) fail "a worker printed other results than \"$want\" (above)" ;;
    esac
    tries=$((tries + 1))
    [ "$tries" -ge 300 ] && fail "the workers never all printed \"$want\""
    kill -0 "$P" 2>/dev/null || fail "the program died"
    sleep 0.2
  done
}

apply() {
  echo "HOTPATCH-VM: hotpatch apply $*"
  before=$(wc -l < "$OUT")
  /bin/hotpatch apply "$@" --pid "$P" --trust "$T/trust.toml" > /tmp/apply.out 2>&1
  rc=$?
  sed 's/^/  /' /tmp/apply.out
  [ $rc -eq 0 ] || fail "hotpatch apply $* exited with $rc"
  grep '^pause:' /tmp/apply.out >> /tmp/pauses
  MARK=$(wc -l < "$OUT")
  [ "$MARK" -ge "$before" ] || fail "the program's output shrank"
}

/bin/liveprog "$T/v1.so" --every 20 --push 10:100 --push 11:4294967280 \
  --push 12:4294967280 log_code:5 log_bytes:2 > "$OUT" 2>&1 &
P=$!
tries=0
until grep -q '^ready ' "$OUT" 2>/dev/null; do
  tries=$((tries + 1))
  [ "$tries" -ge 300 ] && fail "the live program did not start"
  sleep 0.1
done
echo "HOTPATCH-VM: live program running, pid $P, $(ls /proc/$P/task | wc -l) threads"
settles 0 "$V1"
echo "HOTPATCH-VM: v1 results: $V1"

apply "$T/v2.hpk"
settles "$MARK" "$V2"
echo "HOTPATCH-VM: switched to v2: $V2"

apply "$T/v3.hpk"
settles "$MARK" "$V3"
echo "HOTPATCH-VM: re-pointed to v3: $V3"

apply "$T/v3.hpk" --revert
settles "$MARK" "$V1"
echo "HOTPATCH-VM: reverted to v1: $V1"

kill -0 "$P" 2>/dev/null || fail "the program is gone"
[ "$(cut -d' ' -f1 /proc/$P/stat)" = "$P" ] || fail "the pid changed"
kill "$P"
wait "$P" 2>/dev/null
P=
echo "HOTPATCH-VM: live test PASS (same pid throughout)"
sed 's/^/HOTPATCH-VM: /' /tmp/pauses

if [ -x /bin/process-tests ]; then
  echo "HOTPATCH-VM: the Process target's tests (applier/tests/process.rs)"
  HOTPATCH_ROOT=/repo HOTPATCH_LIVEPROG=/bin/liveprog /bin/process-tests --test-threads=1 > /tmp/ptests.out 2>&1
  rc=$?
  grep -E '^test |^test result' /tmp/ptests.out | sed 's/^/  /'
  [ $rc -eq 0 ] || { tail -n 40 /tmp/ptests.out; fail "the Process target's tests failed"; }
fi
echo "HOTPATCH-VM: PASS"
