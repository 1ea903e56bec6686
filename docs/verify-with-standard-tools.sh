#!/usr/bin/env bash
# Verify the audit log (an RFC 9162 Merkle log) against a signed checkpoint, with standard
# tools only (bash, jq, OpenSSL 3, sha256sum, od, coreutils); no part of the IVR service.
#
#   verify-with-standard-tools.sh ENTRIES.jsonl CHECKPOINT.note PUBLIC_KEY.pem
#   verify-with-standard-tools.sh --proof CALL_SID PROOF.json PUBLIC_KEY.pem
#
# ENTRIES.jsonl    `python -m ivr audit entries`: every leaf of the log, {"index", "body"}.
# CHECKPOINT.note  `python -m ivr audit checkpoint` or `GET /audit/checkpoint`: a C2SP
#                  signed note whose text is the origin, the tree size and the base64 root.
# PROOF.json       `python -m ivr audit prove CALL_SID --json`: the call's leaves with their
#                  inclusion proofs and the signed note they lead to.
# PUBLIC_KEY.pem   The log's key as the data controller publishes it (`audit public-key`),
#                  never a key that came with the export.
#
# The first form recomputes the Merkle tree hash of the checkpoint's first tree-size leaves
# and compares it with the signed root; the second folds each leaf of the call with its
# inclusion proof up to the signed root. Both exit 0 and print "OK: ..." last only when
# everything holds; otherwise they exit 1 with "FAILED: <reason>".
set -u -o pipefail
export LC_ALL=C

fail() { echo "FAILED: $*" >&2; exit 1; }
usage() {
  echo "usage: $0 ENTRIES.jsonl CHECKPOINT.note PUBLIC_KEY.pem" >&2
  echo "       $0 --proof CALL_SID PROOF.json PUBLIC_KEY.pem" >&2
  exit 2
}

if [ "${1:-}" = "--proof" ]; then
  [ $# -eq 4 ] || usage
  mode=proof sid=$2 input=$3 key=$4
else
  [ $# -eq 3 ] || usage
  mode=entries input=$1 note=$2 key=$3
fi
for tool in jq openssl sha256sum base64 od tr cut head tail grep sed paste split mktemp; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
for f in "$input" "${note:-$input}" "$key"; do
  [ -r "$f" ] || fail "cannot read $f"
done
tmp=$(mktemp -d) || fail "cannot make a temporary folder"
trap 'rm -rf "$tmp"' EXIT

hex() { od -An -tx1 -v | tr -d ' \n'; }
esc() {  # hex -> printf escapes (\xHH...), with bash builtins only
  local i out=
  for ((i = 0; i < ${#1}; i += 2)); do out+="\\x${1:i:2}"; done
  printf '%s' "$out"
}
node() {  # RFC 9162: a node's hash is SHA-256(0x01 || left || right)
  local h
  h=$(printf "\\x01$(esc "$1")$(esc "$2")" | sha256sum) || fail "sha256sum failed"
  printf '%s' "${h:0:64}"
}

# 1. The checkpoint. Its signed message is the note's text up to and including the newline
#    before the blank line. A signature line is "— <name> <base64(key hash || signature)>",
#    where the key hash is the first 4 bytes of SHA-256(<name> || 0x0A || 0x01 || key).
open_note() {  # FILE [NAME]: NAME is what the messages call it
  local note=$1 label=${2:-$1} blank line rest name stated want found=
  [ -s "$note" ] || fail "$label is empty: it holds no signed checkpoint"
  openssl pkey -pubin -in "$key" -noout -text_pub 2>/dev/null | grep -q '^ED25519 Public-Key' \
    || fail "$key is not an Ed25519 public key (PEM)"
  openssl pkey -pubin -in "$key" -outform DER 2>/dev/null | tail -c 32 > "$tmp/key.raw"
  blank=$(grep -n -m 1 '^$' "$note" | cut -d: -f1)
  [ -n "$blank" ] && [ "$blank" -gt 1 ] \
    || fail "$label is not a signed note (text, a blank line, signature lines)"
  head -n $((blank - 1)) "$note" > "$tmp/note.txt"
  tail -n +$((blank + 1)) "$note" > "$tmp/note.sigs"
  [ -s "$tmp/note.sigs" ] || fail "$label carries no signature"
  while IFS= read -r line; do
    [[ $line == "— "* ]] || fail "$label: not a signature line: ${line:0:40}"
    rest=${line#"— "} name=${line#"— "}
    name=${name%% *} rest=${rest#* }
    printf '%s' "$rest" | base64 -d > "$tmp/sig.blob" 2>/dev/null \
      && [ "$(wc -c < "$tmp/sig.blob")" -eq 68 ] \
      || fail "$label: the signature of $name is not base64 of a key hash and 64 bytes"
    stated=$(head -c 4 "$tmp/sig.blob" | hex)
    want=$({ printf '%s\n\001' "$name"; cat "$tmp/key.raw"; } | sha256sum | cut -c1-8)
    if [ "$stated" = "$want" ]; then found=$name; break; fi
    tried+=" $name+$stated"
  done < "$tmp/note.sigs"
  [ -n "$found" ] || fail "the checkpoint is not signed by $key (its key hash would be" \
    "$want; the note is signed by${tried:- nobody}: another key)"
  tail -c +5 "$tmp/sig.blob" > "$tmp/sig"
  openssl pkeyutl -verify -pubin -inkey "$key" -rawin -in "$tmp/note.txt" \
    -sigfile "$tmp/sig" >/dev/null 2>&1 \
    || fail "the checkpoint's signature does not verify with $key (the note was edited)"
  mapfile -t text < "$tmp/note.txt"
  [ "${#text[@]}" -ge 3 ] || fail "the checkpoint's text is not an origin, a size and a root"
  origin=${text[0]} size=${text[1]}
  [[ $size =~ ^(0|[1-9][0-9]{0,15})$ ]] || fail "the checkpoint's tree size is not a number"
  root=$(printf '%s' "${text[2]}" | base64 -d 2>/dev/null | hex)
  [[ $root =~ ^[0-9a-f]{64}$ ]] || fail "the checkpoint's root is not a base64 SHA-256 hash"
  [ "$size" -gt 0 ] || fail "the checkpoint signs an empty tree"
  signer=$found
  echo "checkpoint: $origin, tree size $size, root $root; signature by $signer verified"
}
tried=

# 2a. The whole log: the Merkle tree hash of the first $size leaves must be the signed root.
#     Leaf hash SHA-256(0x00 || leaf): every leaf is written to a file, sha256sum hashes
#     them all in one run. Then each level is folded pairwise (a last odd node moves up
#     unchanged, which gives RFC 9162's largest-power-of-two split), one sha256sum a level.
verify_entries() {
  local n=0 line idx body count promote l r
  [ -s "$input" ] || fail "$input holds no leaves"
  jq -r 'if (.index | type) != "number" or (.body | type) != "string" then "malformed"
         elif (.body | explode | any(. == 10 or . == 0)) then "\(.index) control"
         else "\(.index) \(.body)" end' "$input" > "$tmp/lines" 2> "$tmp/jq-errors" \
    || fail "$input is not JSON lines of leaves: $(head -n 1 "$tmp/jq-errors")"
  mkdir "$tmp/leaves"
  while IFS= read -r line; do
    idx=${line%% *} body=${line#* }
    [ "$line" != malformed ] || fail "line $((n + 1)) of $input has no index or body"
    [ "$idx" = "$n" ] || fail "line $((n + 1)) of $input has index $idx, expected $n" \
      "(a leaf deleted, inserted or moved)"
    [ "$body" != control ] || fail "leaf $n holds a newline or NUL: it is not canonical JSON"
    [ "$n" -ge "$size" ] || printf '\000%s' "$body" > "$tmp/leaves/$(printf '%012d' "$n")"
    n=$((n + 1))
  done < "$tmp/lines"
  [ "$n" -gt 0 ] || fail "$input holds no leaves"
  [ "$n" -ge "$size" ] || fail "$input holds $n leaves, but the checkpoint signs a tree of" \
    "$size (truncated)"
  (cd "$tmp/leaves" && sha256sum -- *) | cut -c1-64 > "$tmp/level" \
    || fail "sha256sum failed"
  count=$size
  while [ "$count" -gt 1 ]; do
    rm -rf "$tmp/nodes" && mkdir "$tmp/nodes"
    promote=
    paste -d ' ' - - < "$tmp/level" | sed 's/[0-9a-f][0-9a-f]/\\x&/g' > "$tmp/pairs"
    while read -r l r; do
      if [ -z "$r" ]; then promote=${l//\\x/}; else printf "\\x01$l$r"; fi
    done < "$tmp/pairs" > "$tmp/stream"
    (cd "$tmp/nodes" && split -b 65 -a 12 -d "$tmp/stream" n && sha256sum -- *) \
      | cut -c1-64 > "$tmp/level" || fail "sha256sum failed"
    [ -z "$promote" ] || echo "$promote" >> "$tmp/level"
    count=$(((count + 1) / 2))
  done
  computed=$(head -n 1 "$tmp/level")
  [ "$computed" = "$root" ] || fail "the first $size leaves of $input hash to root" \
    "$computed, but the checkpoint signs $root (a leaf was modified, deleted, inserted or" \
    "moved)"
  if [ "$n" -gt "$size" ]; then
    echo "note: leaves $size..$((n - 1)) follow the checkpoint and are not checked; check" \
      "them against a later checkpoint"
  fi
  echo "OK: leaves 0..$((size - 1)) of $input hash to the root that $signer signed for" \
    "$origin (tree size $size)"
}

# 2b. One call: each leaf, folded with its inclusion proof (RFC 9162 section 2.1.3.2, the
#     sides derived from the index and the tree size), must give the signed root.
verify_proof() {
  local n=0 last=-1 idx leaf proof fn sn h p ref
  jq -j '.checkpoint | strings' "$input" > "$tmp/proof.note" 2> "$tmp/jq-errors" \
    || fail "$input is not a proof document: $(head -n 1 "$tmp/jq-errors")"
  open_note "$tmp/proof.note" "the checkpoint in $input"
  [ "$(jq -r '.tree_size' "$input")" = "$size" ] \
    || fail "$input says tree_size $(jq -r '.tree_size' "$input"), but the signed checkpoint" \
      "says $size (edited)"
  [ "$(jq -r '.root_hash' "$input")" = "${text[2]}" ] \
    || fail "$input says root_hash $(jq -r '.root_hash' "$input"), but the signed" \
      "checkpoint says ${text[2]} (edited)"
  jq -r '.leaves[]? | if (.index | type) != "number" or (.leaf | type) != "string"
         or (.proof | type) != "array" then "malformed"
         else "\(.index) \(.leaf) \(.proof | join(" "))" end' "$input" > "$tmp/lines" \
    || fail "$input has no list of leaves"
  while read -r idx leaf proof; do
    [ "$idx" != malformed ] || fail "leaf $((n + 1)) of $input has no index, leaf or proof"
    [[ $idx =~ ^(0|[1-9][0-9]{0,15})$ ]] || fail "leaf index $idx is not a whole number"
    [ "$idx" -gt "$last" ] || fail "leaf $idx: the leaves are not in increasing index order"
    [ "$idx" -lt "$size" ] || fail "leaf $idx is not in the tree of $size leaves"
    printf '%s' "$leaf" | base64 -d > "$tmp/leaf" 2>/dev/null || fail "leaf $idx is not base64"
    ref=$(jq -r '.ref // empty' "$tmp/leaf" 2>/dev/null)
    [ "$ref" = "$sid" ] || fail "leaf $idx is about ${ref:-nothing}, not about call $sid"
    h=$({ printf '\000'; cat "$tmp/leaf"; } | sha256sum | cut -c1-64)
    fn=$idx sn=$((size - 1))
    for p in $proof; do
      p=$(printf '%s' "$p" | base64 -d 2>/dev/null | hex)
      [[ $p =~ ^[0-9a-f]{64}$ ]] || fail "leaf $idx: a proof hash is not a base64 SHA-256"
      [ "$sn" -gt 0 ] || fail "leaf $idx: the proof is longer than index $idx and tree size" \
        "$size allow"
      if [ $((fn & 1)) -eq 1 ] || [ "$fn" -eq "$sn" ]; then
        h=$(node "$p" "$h")
        if [ $((fn & 1)) -eq 0 ]; then
          while [ "$fn" -ne 0 ] && [ $((fn & 1)) -eq 0 ]; do fn=$((fn >> 1)) sn=$((sn >> 1)); done
        fi
      else
        h=$(node "$h" "$p")
      fi
      fn=$((fn >> 1)) sn=$((sn >> 1))
    done
    [ "$sn" -eq 0 ] || fail "leaf $idx: the proof is shorter than index $idx and tree size" \
      "$size need"
    [ "$h" = "$root" ] || fail "leaf $idx with its proof leads to root $h, but the" \
      "checkpoint signs $root"
    echo "leaf $idx: included"
    last=$idx n=$((n + 1))
  done < "$tmp/lines"
  [ "$n" -gt 0 ] || fail "$input holds no leaves"
  echo "OK: $n leaves of call $sid are included in the tree of $size leaves whose root" \
    "$signer signed for $origin"
}

if [ "$mode" = proof ]; then
  verify_proof
else
  open_note "$note"
  verify_entries
fi
