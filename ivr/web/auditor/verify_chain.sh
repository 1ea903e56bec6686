#!/usr/bin/env bash
# Verify an export of the audit log against a signed checkpoint, with standard tools only
# (bash, jq, OpenSSL 3, sha256sum, coreutils, grep); no part of the IVR service is used.
#
#   verify-with-standard-tools.sh [--segment] CHAIN.jsonl CHECKPOINT.json PUBLIC_KEY.pem
#
# CHAIN.jsonl      `python -m ivr audit entries` (from seq 1), or with --segment a run of
#                  consecutive entries (`audit entries --from N`): its first prev_hash is
#                  then taken as given, so entries before it are not checked.
# CHECKPOINT.json  `python -m ivr audit checkpoint`, as handed to you when it was signed.
# PUBLIC_KEY.pem   The signer's key as the data controller publishes it (`audit public-key`),
#                  never a key that came with the export.
#
# Exit 0 only when every entry up to the checkpoint hashes and links correctly and the
# checkpoint's signed body names the same seq and hash; otherwise exit 1 with the reason.
set -u -o pipefail

fail() { echo "FAILED: $*" >&2; exit 1; }

segment=no
if [ "${1:-}" = "--segment" ]; then segment=yes; shift; fi
[ $# -eq 3 ] || { echo "usage: $0 [--segment] CHAIN.jsonl CHECKPOINT.json PUBLIC_KEY.pem" >&2; exit 2; }
chain=$1 checkpoint=$2 key=$3
for tool in jq openssl sha256sum base64 tail cut head grep mktemp; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
for f in "$chain" "$checkpoint" "$key"; do
  [ -r "$f" ] || fail "cannot read $f"
done
tmp=$(mktemp -d) || fail "cannot make a temporary folder"
trap 'rm -rf "$tmp"' EXIT

# 1. The checkpoint: only its signed body counts; the fields beside it are not signed.
body=$(jq -j '.signed_body | strings' "$checkpoint") && [ -n "$body" ] \
  || fail "$checkpoint has no signed_body"
{ printf '\001'; printf '%s' "$body"; } > "$tmp/msg"
jq -j '.signature | strings' "$checkpoint" | base64 -d > "$tmp/sig" 2>/dev/null \
  || fail "$checkpoint: the signature is not base64"
openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/msg" -sigfile "$tmp/sig" \
  >/dev/null 2>&1 \
  || fail "the checkpoint's signature does not verify with $key (signed by another key, or edited)"
cp_seq=$(jq -r '.seq | numbers' <<<"$body") && [ -n "$cp_seq" ] \
  || fail "the signed body has no seq"
[[ $cp_seq =~ ^[1-9][0-9]*$ ]] || fail "the signed body's seq is not a whole number: $cp_seq"
cp_hash=$(jq -r '.hash | strings' <<<"$body") && [[ $cp_hash =~ ^[0-9a-f]{64}$ ]] \
  || fail "the signed body has no hash"
cp_key=$(jq -r '.key_id | strings' <<<"$body")
key_id=$(openssl pkey -pubin -in "$key" -outform DER | tail -c 32 | sha256sum | cut -d' ' -f1)
[ "$cp_key" = "$key_id" ] || fail "the signed body names key $cp_key, but $key is $key_id"
# A checkpoint whose unsigned copies disagree with what was signed has been edited.
for field in seq hash key_id at; do
  signed=$(jq -r --arg f "$field" '.[$f] | tostring' <<<"$body")
  shown=$(jq -r --arg f "$field" '.[$f] // empty | tostring' "$checkpoint")
  [ -z "$shown" ] || [ "$shown" = "$signed" ] \
    || fail "$checkpoint: \"$field\" is $shown but the signed body says $signed (edited)"
done
echo "checkpoint: signature verified; it signs seq $cp_seq, hash $cp_hash"

# 2. The chain: every entry hashes to its recorded hash and links to the one before.
#    An entry's hash is SHA-256(0x00 || prev_hash as 32 bytes || body as UTF-8). jq reads
#    the file once; the loop checks each link and writes each entry's hashed bytes to a
#    file named by its seq; sha256sum -c then checks a thousand of them at a time.
[ -s "$chain" ] || fail "$chain holds no entries"
jq -r '"\(.seq) \(.prev_hash) \(.hash) \(.body | fromjson | .seq) \(.body)"' "$chain" \
  > "$tmp/entries" 2> "$tmp/jq-errors" \
  || fail "$chain is not a file of audit entries: $(head -n 1 "$tmp/jq-errors")"
mkdir "$tmp/bytes"
check_hashes() {  # the entries written since the last check; the first bad one fails
  [ -s "$tmp/expected" ] || return 0
  bad=$(cd "$tmp/bytes" && sha256sum --quiet -c ../expected 2>/dev/null | head -n 1)
  if [ -n "$bad" ]; then
    bad=${bad%%:*}
    fail "bad hash at seq $bad: the body hashes to $(sha256sum < "$tmp/bytes/$bad" |
      cut -c1-64), the entry says $(grep " $bad\$" "$tmp/expected" | cut -c1-64)"
  fi
  rm -f "$tmp/bytes/"* "$tmp/expected"
}
broken() { check_hashes; fail "$@"; }  # report an earlier bad hash first
n=0 prev= expect= first= last= covered=no
while read -r seq prev_hash hash body_seq body; do
  n=$((n + 1))
  [[ $seq =~ ^[1-9][0-9]*$ && $prev_hash =~ ^[0-9a-f]{64}$ && $hash =~ ^[0-9a-f]{64}$ ]] \
    || broken "entry $n of $chain is malformed (seq, prev_hash or hash)"
  [ "$seq" = "$body_seq" ] || broken "entry $n: seq $seq, but its body says seq $body_seq"
  if [ -z "$first" ]; then
    first=$seq
    if [ "$segment" = no ]; then
      [ "$seq" = 1 ] || fail "the chain starts at seq $seq, not 1 (an entry is missing;" \
                             "use --segment only for an export that starts later on purpose)"
      prev=0000000000000000000000000000000000000000000000000000000000000000
    else
      prev=$prev_hash
    fi
  else
    [ "$seq" = "$expect" ] || broken "seq $seq follows seq $last (entry deleted, inserted or moved)"
  fi
  [ "$prev_hash" = "$prev" ] || broken "link broken at seq $seq: prev_hash $prev_hash," \
                                       "but the entry before hashes to $prev"
  raw=
  for ((i = 0; i < 64; i += 2)); do raw+="\\x${prev_hash:i:2}"; done
  { printf '\000'; printf "$raw"; printf '%s' "$body"; } > "$tmp/bytes/$seq"
  echo "$hash  $seq" >> "$tmp/expected"
  if [ "$seq" = "$cp_seq" ]; then
    [ "$hash" = "$cp_hash" ] || broken "seq $seq hashes to $hash, but the checkpoint signed" \
                                       "$cp_hash"
    covered=yes
  fi
  prev=$hash last=$seq expect=$((seq + 1))
  [ $((n % 1000)) -ne 0 ] || check_hashes
done < "$tmp/entries"
check_hashes
[ "$n" -gt 0 ] || fail "$chain holds no entries"
[ "$cp_seq" -ge "$first" ] || fail "the checkpoint (seq $cp_seq) is before the chain's" \
                                   "first entry (seq $first)"
[ "$covered" = yes ] || fail "the chain ends at seq $last, before the checkpoint's seq $cp_seq" \
                             "(truncated)"
if [ "$last" -gt "$cp_seq" ]; then
  echo "note: entries $((cp_seq + 1))..$last link correctly, but no checkpoint you gave covers them"
fi
echo "OK: entries $first..$cp_seq hash and link correctly, and the signed checkpoint covers seq $cp_seq"
