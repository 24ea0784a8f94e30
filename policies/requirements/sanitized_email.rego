# A chain-level requirement for `kest verify --require` (SPEC §10): every
# `send_email` in the passport must have, among its ancestors, a sanitizer
# step (classification `sanitizer`) signed by the sanitizer's key. Input:
# `input.entries` in passport order, each with `hash`, `principal`,
# `operation`, `parents`, `ancestors` (hashes of every entry reachable from
# it) and the decoded `payload`; `input.roots`, `input.tips`.
package kest.require.sanitized_email

import rego.v1

# The workload allowed to sanitize (the one `kest demo` uses).
sanitizer := "spiffe://kest.demo/sanitizer"

default allow := false

allow if count(deny) == 0

deny contains msg if {
	some e in input.entries
	e.operation == "send_email"
	not sanitized(e)
	msg := sprintf("send_email (entry %d) has no sanitizer ancestor signed by %s", [e.index, sanitizer])
}

sanitized(e) if {
	some h in e.ancestors
	some a in input.entries
	a.hash == h
	a.payload.classification == "sanitizer"
	a.principal == sanitizer
}
